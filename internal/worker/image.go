package worker

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/kiln-dev/kiln/internal/images"
	"github.com/kiln-dev/kiln/internal/invoke"
)

// ImageSource presents container images (package imagefs): Mount returns
// the host directory of an image's root file system, mounted read-only, the
// image's own config, and the release the environment calls when it ends.
type ImageSource interface {
	Mount(ctx context.Context, account, manifest string) (root string, cfg images.Config, release func(), err error)
}

// image prepares an image function's environment: its root is the image,
// its command the image's ENTRYPOINT and CMD (or the function's ImageConfig
// overrides), its working directory WORKDIR, and its environment starts
// from the image's ENV. The CMD's first word is the handler (_HANDLER), as
// in Lambda, unless the function names one.
func (w *Worker) image(ctx context.Context, spec *invoke.EnvSpec) (SandboxSpec, []string, func(), error) {
	fn := spec.Function
	if w.cfg.Images == nil || fn.KilnImage == nil {
		return SandboxSpec{}, nil, nil, errors.New("worker: this worker runs no container images")
	}
	root, cfg, release, err := w.cfg.Images.Mount(ctx, spec.Account, fn.KilnImage.Manifest)
	if err != nil {
		return SandboxSpec{}, nil, nil, fmt.Errorf("image of %s: %w", fn.FunctionName, err)
	}
	entry, cmd, dir := cfg.Entrypoint, cfg.Cmd, cfg.WorkingDir
	if r := fn.ImageConfigResponse; r != nil && r.ImageConfig != nil {
		ic := r.ImageConfig
		if len(ic.EntryPoint) > 0 {
			entry = ic.EntryPoint
		}
		if len(ic.Command) > 0 {
			cmd = ic.Command
		}
		if ic.WorkingDirectory != "" {
			dir = ic.WorkingDirectory
		}
	}
	if dir == "" {
		dir = "/"
	}
	if len(cmd) > 0 && spec.Function.Handler == "" {
		spec.Function.Handler = cmd[0]
	}
	sb := SandboxSpec{ImageDir: root, WorkDir: dir, Argv: append(append([]string(nil), entry...), cmd...)}
	return sb, cfg.Env, release, nil
}

// imageDefaults are the variables an image's ENV overrides: Kiln's defaults
// for a zip function's runtime, which an image's own runtime may need other
// values of (its PATH, its libraries).
var imageDefaults = map[string]bool{"PATH": true, "LANG": true, "TZ": true, "LD_LIBRARY_PATH": true}

// mergeEnv adds an image's environment to a function's: the function's own
// variables and Lambda's win, except over imageDefaults.
func mergeEnv(env, image []string) []string {
	if len(image) == 0 {
		return env
	}
	fromImage := map[string]string{}
	var order []string
	for _, kv := range image {
		k, _, ok := strings.Cut(kv, "=")
		if !ok {
			continue
		}
		if _, seen := fromImage[k]; !seen {
			order = append(order, k)
		}
		fromImage[k] = kv
	}
	out := make([]string, 0, len(env)+len(image))
	set := map[string]bool{}
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if img, ok := fromImage[k]; ok && imageDefaults[k] {
			kv = img
		}
		set[k] = true
		out = append(out, kv)
	}
	for _, k := range order {
		if !set[k] {
			out = append(out, fromImage[k])
		}
	}
	return out
}
