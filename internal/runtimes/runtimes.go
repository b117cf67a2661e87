// Package runtimes holds Kiln's own runtime interface clients for Lambda's
// managed runtimes (python3.x, nodejsN.x) and tells how to start a function's
// runtime for a Lambda runtime name.
//
// The clients are small programs in the language of the runtime, using only
// its standard library, that speak the Lambda Runtime API
// ($AWS_LAMBDA_RUNTIME_API) and call the user's handler ($_HANDLER). They are
// embedded in the Kiln binary and written to disk by Install.
package runtimes

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

//go:embed python/bootstrap.py node/bootstrap.js
var files embed.FS

// installed is what Install writes: path under dir → content source.
// node/package.json pins bootstrap.js to CommonJS even if a directory above
// the runtime directory has a package.json with "type": "module".
var installed = []struct {
	path    string
	content func() ([]byte, error)
}{
	{"python/bootstrap.py", func() ([]byte, error) { return files.ReadFile("python/bootstrap.py") }},
	{"node/bootstrap.js", func() ([]byte, error) { return files.ReadFile("node/bootstrap.js") }},
	{"node/package.json", func() ([]byte, error) { return []byte(`{"type": "commonjs"}` + "\n"), nil }},
}

// Install writes the bootstrap files into dir (dir/python/bootstrap.py,
// dir/node/bootstrap.js and dir/node/package.json): files 0444, their
// directories 0555. dir itself is created (0755) if missing and otherwise left
// alone. Install is idempotent: files that already have the right content
// and mode are not touched; stale ones are replaced atomically.
func Install(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("runtimes: install: %w", err)
	}
	for _, f := range installed {
		content, err := f.content()
		if err != nil {
			return fmt.Errorf("runtimes: install: %w", err)
		}
		if err := installFile(filepath.Join(dir, filepath.FromSlash(f.path)), content); err != nil {
			return fmt.Errorf("runtimes: install: %w", err)
		}
	}
	return nil
}

func installFile(path string, content []byte) error {
	sub := filepath.Dir(path)
	if err := os.MkdirAll(sub, 0o755); err != nil {
		return err
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm() == 0o444 {
		if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, content) {
			return os.Chmod(sub, 0o555)
		}
	}
	// (Re)write: make the directory writable for the time of the rename.
	if err := os.Chmod(sub, 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(sub, "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	_, werr := tmp.Write(content)
	cerr := tmp.Close()
	if err := errors.Join(werr, cerr, os.Chmod(tmp.Name(), 0o444)); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return os.Chmod(sub, 0o555)
}

// ErrUnsupported is wrapped by Lookup's error for a runtime that Kiln cannot
// run on this host (unknown names included).
var ErrUnsupported = errors.New("runtime not supported on this host")

// Runtime describes how to start one Lambda runtime name.
type Runtime struct {
	Name string
	// ExecutionEnv is the AWS_EXECUTION_ENV value, e.g.
	// "AWS_Lambda_python3.11", "AWS_Lambda_nodejs20.x"; empty for provided.*.
	ExecutionEnv string
}

// Interpreter locations; variables so that tests can point elsewhere.
var (
	binDir   = "/usr/bin"
	nodePath = "/usr/bin/node"
)

var (
	pythonMu    sync.Mutex
	pythonFound = map[string]bool{} // "python3.11" → /usr/bin/python3.11 exists

	nodeOnce  sync.Once
	nodeMajor int // 0 when node is missing or its version unreadable
)

// Lookup returns the runtime for a Lambda runtime name, or an error wrapping
// ErrUnsupported when Kiln cannot run it on this host. Supported:
// provided.al2023, provided.al2 and provided; python3.X when /usr/bin/python3.X
// exists; nodejsN.x when /usr/bin/node's major version is N. What is found on
// the host is checked once and cached.
func Lookup(name string) (Runtime, error) {
	switch {
	case name == "provided" || name == "provided.al2" || name == "provided.al2023":
		return Runtime{Name: name}, nil
	case isPython(name):
		if pythonAvailable(name) {
			return Runtime{Name: name, ExecutionEnv: "AWS_Lambda_" + name}, nil
		}
		return Runtime{}, fmt.Errorf("%w: %s (no %s)", ErrUnsupported, name, filepath.Join(binDir, name))
	case isNode(name):
		n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(name, "nodejs"), ".x"))
		if major := nodeVersion(); major != 0 && major == n {
			return Runtime{Name: name, ExecutionEnv: "AWS_Lambda_" + name}, nil
		} else if major != 0 {
			return Runtime{}, fmt.Errorf("%w: %s (%s is Node.js %d)", ErrUnsupported, name, nodePath, major)
		}
		return Runtime{}, fmt.Errorf("%w: %s (no usable %s)", ErrUnsupported, name, nodePath)
	}
	return Runtime{}, fmt.Errorf("%w: %s", ErrUnsupported, name)
}

// isPython reports whether name is "python3." followed by digits.
func isPython(name string) bool {
	minor, ok := strings.CutPrefix(name, "python3.")
	return ok && isDigits(minor)
}

// isNode reports whether name is "nodejs<digits>.x".
func isNode(name string) bool {
	s, ok := strings.CutPrefix(name, "nodejs")
	if !ok {
		return false
	}
	s, ok = strings.CutSuffix(s, ".x")
	return ok && isDigits(s)
}

func isDigits(s string) bool {
	if s == "" || len(s) > 3 {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

func pythonAvailable(name string) bool {
	pythonMu.Lock()
	defer pythonMu.Unlock()
	ok, seen := pythonFound[name]
	if !seen {
		fi, err := os.Stat(filepath.Join(binDir, name))
		ok = err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0
		pythonFound[name] = ok
	}
	return ok
}

// nodeVersion returns the major version of /usr/bin/node (from
// `node --version`, e.g. "v20.11.1"), or 0. Run once.
func nodeVersion() int {
	nodeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, nodePath, "--version").Output()
		if err != nil {
			return
		}
		v := strings.TrimPrefix(strings.TrimSpace(string(out)), "v")
		major, _, _ := strings.Cut(v, ".")
		nodeMajor, _ = strconv.Atoi(major)
	})
	return nodeMajor
}

// Command is the argv that starts the runtime. runtimeDir is where Install
// wrote the files; taskRoot is the function code directory.
//
//	provided.*: [taskRoot/bootstrap]
//	python3.X:  [/usr/bin/python3.X, runtimeDir/python/bootstrap.py]
//	nodejsN.x:  [/usr/bin/node, runtimeDir/node/bootstrap.js]
//
// It returns nil for a name that is none of these.
func (r Runtime) Command(runtimeDir, taskRoot string) []string {
	switch {
	case strings.HasPrefix(r.Name, "provided"):
		return []string{filepath.Join(taskRoot, "bootstrap")}
	case isPython(r.Name):
		return []string{filepath.Join(binDir, r.Name), filepath.Join(runtimeDir, "python", "bootstrap.py")}
	case isNode(r.Name):
		return []string{nodePath, filepath.Join(runtimeDir, "node", "bootstrap.js")}
	}
	return nil
}

// known lists the runtime names Lambda defines that are not python3.X or
// nodejsN.x (those are checked by range in Known).
var known = map[string]bool{
	"provided": true, "provided.al2": true, "provided.al2023": true,
	"java8": true, "java8.al2": true, "java11": true, "java17": true, "java21": true, "java25": true,
	"dotnetcore3.1": true, "dotnet6": true, "dotnet8": true, "dotnet10": true,
	"ruby3.2": true, "ruby3.3": true, "ruby3.4": true,
}

// Known reports whether name is a runtime name Lambda defines at all
// (python3.8–python3.14, nodejs16.x–nodejs24.x in even versions, provided,
// provided.al2, provided.al2023, and the java, dotnet and ruby runtimes), so
// that the control plane can tell an invalid runtime
// (InvalidParameterValueException) from one that is valid but not installed
// on this host (Lookup's ErrUnsupported).
func Known(name string) bool {
	if known[name] {
		return true
	}
	if isPython(name) {
		minor, _ := strconv.Atoi(strings.TrimPrefix(name, "python3."))
		return minor >= 8 && minor <= 14 && name == "python3."+strconv.Itoa(minor)
	}
	if isNode(name) {
		major, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(name, "nodejs"), ".x"))
		return major >= 16 && major <= 24 && major%2 == 0 && name == "nodejs"+strconv.Itoa(major)+".x"
	}
	return false
}
