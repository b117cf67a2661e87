package api

// FunctionConfiguration is Lambda's FunctionConfiguration document, field for
// field as botocore's model names it. Kiln stores it as is, so what a client
// reads back is exactly what was validated and kept.
type FunctionConfiguration struct {
	FunctionName               string                `json:"FunctionName"`
	FunctionArn                string                `json:"FunctionArn"`
	Runtime                    string                `json:"Runtime,omitempty"`
	Role                       string                `json:"Role"`
	Handler                    string                `json:"Handler,omitempty"`
	CodeSize                   int64                 `json:"CodeSize"`
	Description                string                `json:"Description"`
	Timeout                    int                   `json:"Timeout"`
	MemorySize                 int                   `json:"MemorySize"`
	LastModified               string                `json:"LastModified"`
	CodeSha256                 string                `json:"CodeSha256"`
	Version                    string                `json:"Version"`
	Environment                *EnvironmentResponse  `json:"Environment,omitempty"`
	TracingConfig              *TracingConfig        `json:"TracingConfig,omitempty"`
	DeadLetterConfig           *DeadLetterConfig     `json:"DeadLetterConfig,omitempty"`
	RevisionId                 string                `json:"RevisionId"`
	Layers                     []Layer               `json:"Layers,omitempty"`
	State                      string                `json:"State,omitempty"`
	StateReason                string                `json:"StateReason,omitempty"`
	StateReasonCode            string                `json:"StateReasonCode,omitempty"`
	LastUpdateStatus           string                `json:"LastUpdateStatus,omitempty"`
	LastUpdateStatusReason     string                `json:"LastUpdateStatusReason,omitempty"`
	LastUpdateStatusReasonCode string                `json:"LastUpdateStatusReasonCode,omitempty"`
	PackageType                string                `json:"PackageType,omitempty"`
	Architectures              []string              `json:"Architectures,omitempty"`
	EphemeralStorage           *EphemeralStorage     `json:"EphemeralStorage,omitempty"`
	SnapStart                  *SnapStartResponse    `json:"SnapStart,omitempty"`
	ImageConfigResponse        *ImageConfigResponse  `json:"ImageConfigResponse,omitempty"`
	LoggingConfig              *LoggingConfig        `json:"LoggingConfig,omitempty"`
	RuntimeVersionConfig       *RuntimeVersionConfig `json:"RuntimeVersionConfig,omitempty"`
	// KilnImage is where an image function's code is: Kiln's own member,
	// kept in the metadata; the control plane leaves it out of its answers.
	KilnImage *ImageCode `json:"KilnImage,omitempty"`
}

// ImageConfigResponse is an image function's ImageConfig, as Lambda shows it.
type ImageConfigResponse struct {
	ImageConfig *ImageConfig `json:"ImageConfig,omitempty"`
}

// ImageConfig overrides the image's own ENTRYPOINT, CMD and WORKDIR.
type ImageConfig struct {
	EntryPoint       []string `json:"EntryPoint,omitempty"`
	Command          []string `json:"Command,omitempty"`
	WorkingDirectory string   `json:"WorkingDirectory,omitempty"`
}

// ImageCode records an image function's code.
type ImageCode struct {
	ImageUri         string `json:"ImageUri"`
	ResolvedImageUri string `json:"ResolvedImageUri"` // by digest
	// Manifest names the image's sealed manifest in the chunk store.
	Manifest string `json:"Manifest"`
}

type EnvironmentResponse struct {
	Variables map[string]string `json:"Variables"`
}

type TracingConfig struct {
	Mode string `json:"Mode,omitempty"`
}

type DeadLetterConfig struct {
	TargetArn string `json:"TargetArn,omitempty"`
}

// Layer is a layer version a function uses.
type Layer struct {
	Arn      string `json:"Arn,omitempty"`
	CodeSize int64  `json:"CodeSize,omitempty"`
	// KilnCodeSha256 names the layer's zip in the code store and
	// KilnUnzipped is its unpacked size: Kiln's members, kept in the
	// metadata (a function keeps its layers' content after a version is
	// deleted) and left out of the control plane's answers.
	KilnCodeSha256 string `json:"KilnCodeSha256,omitempty"`
	KilnUnzipped   int64  `json:"KilnUnzipped,omitempty"`
}

// LoggingConfig is where and how a function's logs go.
type LoggingConfig struct {
	LogFormat           string `json:"LogFormat,omitempty"`
	ApplicationLogLevel string `json:"ApplicationLogLevel,omitempty"`
	SystemLogLevel      string `json:"SystemLogLevel,omitempty"`
	LogGroup            string `json:"LogGroup,omitempty"`
}

// RuntimeVersionConfig names the runtime version a function runs.
type RuntimeVersionConfig struct {
	RuntimeVersionArn string `json:"RuntimeVersionArn,omitempty"`
}

type EphemeralStorage struct {
	Size int `json:"Size"`
}

type SnapStartResponse struct {
	ApplyOn            string `json:"ApplyOn,omitempty"`
	OptimizationStatus string `json:"OptimizationStatus,omitempty"`
}

// AliasConfiguration is Lambda's alias document.
type AliasConfiguration struct {
	AliasArn        string                     `json:"AliasArn"`
	Name            string                     `json:"Name"`
	FunctionVersion string                     `json:"FunctionVersion"`
	Description     string                     `json:"Description"`
	RoutingConfig   *AliasRoutingConfiguration `json:"RoutingConfig,omitempty"`
	RevisionId      string                     `json:"RevisionId"`
}

// AliasRoutingConfiguration sends a share of an alias's traffic to a second version.
type AliasRoutingConfiguration struct {
	AdditionalVersionWeights map[string]float64 `json:"AdditionalVersionWeights,omitempty"`
}

// FunctionCodeLocation is where GetFunction says the deployment package can
// be downloaded (a presigned URL for 10 minutes).
type FunctionCodeLocation struct {
	RepositoryType string `json:"RepositoryType,omitempty"`
	Location       string `json:"Location,omitempty"`
	ImageUri       string `json:"ImageUri,omitempty"`
	// ResolvedImageUri is ImageUri by digest, for an image function.
	ResolvedImageUri string `json:"ResolvedImageUri,omitempty"`
}

// Concurrency is a function's reserved concurrency.
type Concurrency struct {
	ReservedConcurrentExecutions *int `json:"ReservedConcurrentExecutions,omitempty"`
}

// GetFunctionResponse is GetFunction's answer.
type GetFunctionResponse struct {
	Configuration *FunctionConfiguration `json:"Configuration"`
	Code          *FunctionCodeLocation  `json:"Code,omitempty"`
	Tags          map[string]string      `json:"Tags"`
	Concurrency   *Concurrency           `json:"Concurrency,omitempty"`
}

// ListFunctionsResponse is ListFunctions' page.
type ListFunctionsResponse struct {
	Functions  []*FunctionConfiguration `json:"Functions"`
	NextMarker string                   `json:"NextMarker,omitempty"`
}

// ListVersionsByFunctionResponse is ListVersionsByFunction's page.
type ListVersionsByFunctionResponse struct {
	Versions   []*FunctionConfiguration `json:"Versions"`
	NextMarker string                   `json:"NextMarker,omitempty"`
}

// ListAliasesResponse is ListAliases' page.
type ListAliasesResponse struct {
	Aliases    []*AliasConfiguration `json:"Aliases"`
	NextMarker string                `json:"NextMarker,omitempty"`
}

// ProvisionedConcurrencyConfig is Get/PutProvisionedConcurrencyConfig's
// document; FunctionArn is set in list items only.
type ProvisionedConcurrencyConfig struct {
	FunctionArn                              string `json:"FunctionArn,omitempty"`
	RequestedProvisionedConcurrentExecutions int    `json:"RequestedProvisionedConcurrentExecutions"`
	AvailableProvisionedConcurrentExecutions int    `json:"AvailableProvisionedConcurrentExecutions"`
	AllocatedProvisionedConcurrentExecutions int    `json:"AllocatedProvisionedConcurrentExecutions"`
	Status                                   string `json:"Status"`
	StatusReason                             string `json:"StatusReason,omitempty"`
	LastModified                             string `json:"LastModified"`
}

// AccountSettings is GetAccountSettings' document.
type AccountSettings struct {
	AccountLimit struct {
		TotalCodeSize                  int64 `json:"TotalCodeSize"`
		CodeSizeUnzipped               int64 `json:"CodeSizeUnzipped"`
		CodeSizeZipped                 int64 `json:"CodeSizeZipped"`
		ConcurrentExecutions           int   `json:"ConcurrentExecutions"`
		UnreservedConcurrentExecutions int   `json:"UnreservedConcurrentExecutions"`
	} `json:"AccountLimit"`
	AccountUsage struct {
		TotalCodeSize int64 `json:"TotalCodeSize"`
		FunctionCount int   `json:"FunctionCount"`
	} `json:"AccountUsage"`
}

// FunctionEventInvokeConfig is a function's (version's, alias's) settings
// for asynchronous invocation, Put/Get/Update/ListFunctionEventInvokeConfig(s)'
// document. LastModified is in epoch seconds, as the REST-JSON protocol
// sends timestamps. Unset limits take Lambda's defaults (2 retries, 6 hours).
type FunctionEventInvokeConfig struct {
	LastModified             float64            `json:"LastModified"`
	FunctionArn              string             `json:"FunctionArn"`
	MaximumRetryAttempts     *int               `json:"MaximumRetryAttempts,omitempty"`
	MaximumEventAgeInSeconds *int               `json:"MaximumEventAgeInSeconds,omitempty"`
	DestinationConfig        *DestinationConfig `json:"DestinationConfig,omitempty"`
}

// DestinationConfig names where invocation records of asynchronous invokes go.
type DestinationConfig struct {
	OnSuccess *OnSuccess `json:"OnSuccess,omitempty"`
	OnFailure *OnFailure `json:"OnFailure,omitempty"`
}

// OnSuccess is the destination of successful invocations' records.
type OnSuccess struct {
	Destination string `json:"Destination,omitempty"`
}

// OnFailure is the destination of failed invocations' records.
type OnFailure struct {
	Destination string `json:"Destination,omitempty"`
}

// ListFunctionEventInvokeConfigsResponse is ListFunctionEventInvokeConfigs' page.
type ListFunctionEventInvokeConfigsResponse struct {
	FunctionEventInvokeConfigs []*FunctionEventInvokeConfig `json:"FunctionEventInvokeConfigs"`
	NextMarker                 string                       `json:"NextMarker,omitempty"`
}

// FunctionURLConfig is a function URL's configuration, as the
// *FunctionUrlConfig operations answer (and ListFunctionUrlConfigs lists).
type FunctionURLConfig struct {
	FunctionUrl      string `json:"FunctionUrl"`
	FunctionArn      string `json:"FunctionArn"`
	AuthType         string `json:"AuthType"`
	Cors             *Cors  `json:"Cors,omitempty"`
	CreationTime     string `json:"CreationTime"`
	LastModifiedTime string `json:"LastModifiedTime,omitempty"`
	InvokeMode       string `json:"InvokeMode"`
}

// Cors is a function URL's cross-origin resource sharing settings.
type Cors struct {
	AllowCredentials *bool    `json:"AllowCredentials,omitempty"`
	AllowHeaders     []string `json:"AllowHeaders,omitempty"`
	AllowMethods     []string `json:"AllowMethods,omitempty"`
	AllowOrigins     []string `json:"AllowOrigins,omitempty"`
	ExposeHeaders    []string `json:"ExposeHeaders,omitempty"`
	MaxAge           *int     `json:"MaxAge,omitempty"`
}

// ListFunctionURLConfigsResponse is ListFunctionUrlConfigs' answer.
type ListFunctionURLConfigsResponse struct {
	FunctionUrlConfigs []*FunctionURLConfig `json:"FunctionUrlConfigs"`
	NextMarker         *string              `json:"NextMarker,omitempty"`
}
