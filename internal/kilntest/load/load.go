// Package load keeps callers busy for Kiln's load and fault tests.
package load

import "sync"

// Repeat runs step in n goroutines, each calling it over and over (with
// the goroutine's index) until stop. Stop waits for the calls in flight;
// it may be called more than once.
func Repeat(n int, step func(i int)) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				default:
				}
				step(i)
			}
		}()
	}
	var once sync.Once
	return func() {
		once.Do(func() { close(done) })
		wg.Wait()
	}
}
