package controlplane

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/kiln-dev/kiln/internal/api"
	"github.com/kiln-dev/kiln/internal/runtimes"
)

// settings are the configuration members CreateFunction and
// UpdateFunctionConfiguration share. A nil member was not sent: on update it
// leaves the current value alone.
type settings struct {
	Role              *string               `json:"Role"`
	Handler           *string               `json:"Handler"`
	Description       *string               `json:"Description"`
	Timeout           *int                  `json:"Timeout"`
	MemorySize        *int                  `json:"MemorySize"`
	Runtime           *string               `json:"Runtime"`
	Environment       *environment          `json:"Environment"`
	DeadLetterConfig  *api.DeadLetterConfig `json:"DeadLetterConfig"`
	TracingConfig     *api.TracingConfig    `json:"TracingConfig"`
	EphemeralStorage  *ephemeralStorage     `json:"EphemeralStorage"`
	SnapStart         *snapStart            `json:"SnapStart"`
	Layers            []string              `json:"Layers"`
	VpcConfig         *vpcConfig            `json:"VpcConfig"`
	FileSystemConfigs []json.RawMessage     `json:"FileSystemConfigs"`
	ImageConfig       json.RawMessage       `json:"ImageConfig"`
	KMSKeyArn         *string               `json:"KMSKeyArn"`
	LoggingConfig     *api.LoggingConfig    `json:"LoggingConfig"`
}

type environment struct {
	Variables map[string]string `json:"Variables"`
}

type ephemeralStorage struct {
	Size *int `json:"Size"`
}

type snapStart struct {
	ApplyOn *string `json:"ApplyOn"`
}

type vpcConfig struct {
	SubnetIds        []string `json:"SubnetIds"`
	SecurityGroupIds []string `json:"SecurityGroupIds"`
}

var (
	roleRe    = regexp.MustCompile(`^arn:(aws[a-zA-Z-]*)?:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-_/]+$`)
	handlerRe = regexp.MustCompile(`^[^\s]+$`)
	envKeyRe  = regexp.MustCompile(`^[a-zA-Z]([a-zA-Z0-9_])+$`)
	dlqRe     = regexp.MustCompile(`^(arn:(aws[a-zA-Z-]*)?:[a-z0-9-.]+:.*)?$`)
	aliasRe   = regexp.MustCompile(`^[a-zA-Z0-9-_]{1,128}$`)
	versionRe = regexp.MustCompile(`^(\$LATEST|[0-9]+)$`)
	digitsRe  = regexp.MustCompile(`^[0-9]+$`)
)

// reservedEnv are the environment variables Lambda sets itself and refuses
// in a function's configuration.
var reservedEnv = map[string]bool{
	"_HANDLER": true, "_X_AMZN_TRACE_ID": true, "AWS_DEFAULT_REGION": true, "AWS_REGION": true,
	"AWS_EXECUTION_ENV": true, "AWS_LAMBDA_FUNCTION_NAME": true, "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": true,
	"AWS_LAMBDA_FUNCTION_VERSION": true, "AWS_LAMBDA_INITIALIZATION_TYPE": true, "AWS_LAMBDA_LOG_GROUP_NAME": true,
	"AWS_LAMBDA_LOG_STREAM_NAME": true, "AWS_ACCESS_KEY": true, "AWS_ACCESS_KEY_ID": true,
	"AWS_SECRET_ACCESS_KEY": true, "AWS_SESSION_TOKEN": true, "AWS_LAMBDA_RUNTIME_API": true,
	"LAMBDA_TASK_ROOT": true, "LAMBDA_RUNTIME_DIR": true,
}

const maxEnvironmentBytes = 4096

// apply validates the members of st that were sent and writes them into cfg.
func apply(cfg *api.FunctionConfiguration, st *settings) error {
	if st.Role != nil {
		if err := checkRole(*st.Role); err != nil {
			return err
		}
		cfg.Role = *st.Role
	}
	if st.Runtime != nil {
		if err := checkRuntime(*st.Runtime); err != nil {
			return err
		}
		cfg.Runtime = *st.Runtime
	}
	if st.Handler != nil {
		h := *st.Handler
		if len(h) > 128 {
			return validation(h, "handler", "Member must have length less than or equal to 128")
		}
		if !handlerRe.MatchString(h) {
			return validation(h, "handler", `Member must satisfy regular expression pattern: [^\s]+`)
		}
		cfg.Handler = h
	}
	if st.Description != nil {
		if err := checkDescription(*st.Description); err != nil {
			return err
		}
		cfg.Description = *st.Description
	}
	if st.Timeout != nil {
		if err := between(*st.Timeout, "timeout", 1, 900); err != nil {
			return err
		}
		cfg.Timeout = *st.Timeout
	}
	if st.MemorySize != nil {
		if err := between(*st.MemorySize, "memorySize", 128, 10240); err != nil {
			return err
		}
		cfg.MemorySize = *st.MemorySize
	}
	if st.Environment != nil {
		vars := st.Environment.Variables
		if err := checkEnvironment(vars); err != nil {
			return err
		}
		cfg.Environment = nil
		if len(vars) > 0 {
			cfg.Environment = &api.EnvironmentResponse{Variables: vars}
		}
	}
	if st.DeadLetterConfig != nil {
		t := st.DeadLetterConfig.TargetArn
		if !dlqRe.MatchString(t) {
			return validation(t, "deadLetterConfig.targetArn", "Member must satisfy regular expression pattern: (arn:(aws[a-zA-Z-]*)?:[a-z0-9-.]+:.*)|()")
		}
		if err := checkDeadLetterTarget(cfg, t); err != nil {
			return err
		}
		cfg.DeadLetterConfig = nil
		if t != "" {
			cfg.DeadLetterConfig = &api.DeadLetterConfig{TargetArn: t}
		}
	}
	if st.TracingConfig != nil && st.TracingConfig.Mode != "" {
		m := st.TracingConfig.Mode
		if m != "Active" && m != "PassThrough" {
			return validation(m, "tracingConfig.mode", "Member must satisfy enum value set: [Active, PassThrough]")
		}
		cfg.TracingConfig = &api.TracingConfig{Mode: m}
	}
	if st.EphemeralStorage != nil {
		size := st.EphemeralStorage.Size
		if size == nil {
			return validation(nil, "ephemeralStorage.size", "Member must not be null")
		}
		if err := between(*size, "ephemeralStorage.size", 512, 10240); err != nil {
			return err
		}
		cfg.EphemeralStorage = &api.EphemeralStorage{Size: *size}
	}
	if st.SnapStart != nil && st.SnapStart.ApplyOn != nil {
		a := *st.SnapStart.ApplyOn
		if a != "PublishedVersions" && a != "None" {
			return validation(a, "snapStart.applyOn", "Member must satisfy enum value set: [PublishedVersions, None]")
		}
		cfg.SnapStart = &api.SnapStartResponse{ApplyOn: a, OptimizationStatus: "Off"}
	}
	// What Kiln cannot honour is refused rather than silently ignored.
	if st.VpcConfig != nil && (len(st.VpcConfig.SubnetIds) > 0 || len(st.VpcConfig.SecurityGroupIds) > 0) {
		return api.Errorf(api.InvalidParameterValue, "Kiln does not support VPC configuration.")
	}
	if len(st.FileSystemConfigs) > 0 {
		return api.Errorf(api.InvalidParameterValue, "Kiln does not support file system configurations.")
	}
	if err := applyImageConfig(cfg, st.ImageConfig); err != nil {
		return err
	}
	if lc := st.LoggingConfig; lc != nil {
		// Kiln writes logs as Lambda does by default, and only so.
		group := "/aws/lambda/" + cfg.FunctionName
		if lc.LogFormat != "" && lc.LogFormat != "Text" || lc.LogGroup != "" && lc.LogGroup != group ||
			lc.ApplicationLogLevel != "" || lc.SystemLogLevel != "" {
			return api.Errorf(api.InvalidParameterValue, "Kiln does not support this LoggingConfig: logs are plain text in the log group %s, without log levels.", group)
		}
	}
	if st.KMSKeyArn != nil && *st.KMSKeyArn != "" {
		return api.Errorf(api.InvalidParameterValue, "Kiln does not support KMSKeyArn: environment variables are stored in Kiln's metadata store.")
	}
	return nil
}

func checkRole(role string) error {
	if !roleRe.MatchString(role) {
		return validation(role, "role", `Member must satisfy regular expression pattern: arn:(aws[a-zA-Z-]*)?:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-_/]+`)
	}
	return nil
}

func checkDescription(d string) error {
	if len([]rune(d)) > 256 {
		return validation(d, "description", "Member must have length less than or equal to 256")
	}
	return nil
}

func checkEnvironment(vars map[string]string) error {
	keys := make([]string, 0, len(vars))
	for k := range vars {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if !envKeyRe.MatchString(k) {
			return api.Errorf(api.Validation, "1 validation error detected: Value at 'environment.variables' failed to satisfy constraint: Map keys must satisfy constraint: [Member must satisfy regular expression pattern: [a-zA-Z]([a-zA-Z0-9_])+]")
		}
	}
	var reserved []string
	for _, k := range keys {
		if reservedEnv[k] {
			reserved = append(reserved, k)
		}
	}
	if len(reserved) > 0 {
		return api.Errorf(api.InvalidParameterValue, "Lambda was unable to configure your environment variables because the environment variables you have provided contains reserved keys that are currently not supported for modification. Reserved keys used in this request: %s", strings.Join(reserved, ", "))
	}
	if b, _ := json.Marshal(vars); len(b) > maxEnvironmentBytes {
		return api.Errorf(api.InvalidParameterValue, "Lambda was unable to configure your environment variables because the environment variables you have provided exceeded the 4KB limit. String measured: %s", b)
	}
	return nil
}

// checkRuntime accepts a runtime that Lambda defines and this host can run.
func checkRuntime(name string) error {
	if !runtimes.Known(name) {
		return api.Errorf(api.InvalidParameterValue, "Value %s at 'runtime' failed to satisfy constraint: Member must satisfy enum value set: [%s] or be a valid ARN",
			name, strings.Join(knownRuntimes(), ", "))
	}
	if _, err := runtimes.Lookup(name); err != nil {
		return api.Errorf(api.InvalidParameterValue, "The runtime parameter of %s is valid in Lambda, but Kiln cannot run it on this host (%v).", name, err)
	}
	return nil
}

// knownRuntimes lists the names runtimes.Known accepts, for Lambda's
// enum-value message: candidates filtered by Known, so the list never claims
// more than the check.
var knownRuntimes = sync.OnceValue(func() []string {
	var out []string
	for _, n := range []string{"provided", "provided.al2", "provided.al2023",
		"java8", "java8.al2", "java11", "java17", "java21", "java25",
		"dotnetcore3.1", "dotnet6", "dotnet8", "dotnet10", "ruby3.2", "ruby3.3", "ruby3.4", "ruby3.5"} {
		if runtimes.Known(n) {
			out = append(out, n)
		}
	}
	for minor := 0; minor < 30; minor++ {
		if n := "python3." + strconv.Itoa(minor); runtimes.Known(n) {
			out = append(out, n)
		}
	}
	for major := 0; major < 40; major++ {
		if n := fmt.Sprintf("nodejs%d.x", major); runtimes.Known(n) {
			out = append(out, n)
		}
	}
	return out
})

func checkArchitectures(archs []string) error {
	if len(archs) != 1 {
		constraint := "Member must have length less than or equal to 1"
		if len(archs) == 0 {
			constraint = "Member must have length greater than or equal to 1"
		}
		return validation("["+strings.Join(archs, ", ")+"]", "architectures", constraint)
	}
	if !slices.Contains([]string{"x86_64", "arm64"}, archs[0]) {
		return validation("["+archs[0]+"]", "architectures", "Member must satisfy constraint: [Member must satisfy enum value set: [x86_64, arm64], Member must not be null]")
	}
	return nil
}

func checkTags(tags map[string]string) error {
	if len(tags) > 50 {
		return api.Errorf(api.InvalidParameterValue, "Number of tags exceeds resource tag limit.")
	}
	for k, v := range tags {
		if k == "" || len([]rune(k)) > 128 {
			return validation(k, "tags", "Map keys must satisfy constraint: [Member must have length less than or equal to 128, Member must have length greater than or equal to 1]")
		}
		if strings.HasPrefix(strings.ToLower(k), "aws:") {
			return api.Errorf(api.InvalidParameterValue, "Tag keys starting with 'aws:' are reserved for system use.")
		}
		if len([]rune(v)) > 256 {
			return validation(v, "tags", "Map value must satisfy constraint: [Member must have length less than or equal to 256]")
		}
	}
	return nil
}
