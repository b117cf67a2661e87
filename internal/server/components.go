package server

import (
	"github.com/kiln-dev/kiln/internal/assignment"
	"github.com/kiln-dev/kiln/internal/counting"
	"github.com/kiln-dev/kiln/internal/esm"
	"github.com/kiln-dev/kiln/internal/eventinvoke"
	"github.com/kiln-dev/kiln/internal/metrics"
	"github.com/kiln-dev/kiln/internal/streams"
	"github.com/kiln-dev/kiln/internal/worker"
)

// The components that tests and kiln-bench look into, read-only: a
// Server's parts are its own, not fields for others to swap.

// Worker is the worker: its environments.
func (s *Server) Worker() *worker.Worker { return s.worker }

// Assignment is the assignment service: environments by state.
func (s *Server) Assignment() *assignment.Service { return s.assignment }

// Counter is the counting service: concurrency in use.
func (s *Server) Counter() *counting.Counter { return s.counter }

// Metrics is the metrics set.
func (s *Server) Metrics() *metrics.Set { return s.metrics }

// Async is the asynchronous invoke service: its queues and backlog.
func (s *Server) Async() *eventinvoke.Service { return s.async }

// Streams is the Kinesis-compatible streams service.
func (s *Server) Streams() *streams.Service { return s.streams }

// Pollers runs the event source mappings (a test may close them to run its
// own).
func (s *Server) Pollers() *esm.Pollers { return s.pollers }
