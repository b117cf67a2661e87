package controlplane

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/kiln-dev/kiln/internal/api"
	"github.com/kiln-dev/kiln/internal/metadata"
	"github.com/kiln-dev/kiln/internal/runtimes"
)

// Layers: zips published in versions, kept in the code store like
// functions' packages (validated the same way) and described in the
// metadata's layer bucket. A function names up to five versions; workers
// merge them in order into its /opt (codestore.Layers).

const maxLayers = 5

var (
	layerNameRe = regexp.MustCompile(`^((arn:[a-zA-Z0-9-]+:lambda:[a-zA-Z0-9-]+:\d{12}:layer:[a-zA-Z0-9-_]+)|[a-zA-Z0-9-_]+)$`)
	layerArnRe  = regexp.MustCompile(`^arn:[a-zA-Z0-9-]+:lambda:([a-zA-Z0-9-]+):(\d{12}):layer:([a-zA-Z0-9-_]+):([0-9]+)$`)
	statementRe = regexp.MustCompile(`^[a-zA-Z0-9-_]{1,100}$`)
	layerPrinRe = regexp.MustCompile(`^(\d{12}|\*|arn:(aws[a-zA-Z-]*):iam::(\d{12}):root)$`)
)

const (
	layerAction  = "lambda:GetLayerVersion" // the one action a layer's policy grants
	layerPattern = `(arn:[a-zA-Z0-9-]+:lambda:[a-zA-Z0-9-]+:\d{12}:layer:[a-zA-Z0-9-_]+)|[a-zA-Z0-9-_]+`
)

func (s *Service) layerRoutes() []route {
	const v = "/2018-10-31/layers/{LayerName}/versions"
	return []route{
		{"GET /2018-10-31/layers", "ListLayers", s.listLayers},
		{"POST " + v, "PublishLayerVersion", s.publishLayerVersion},
		{"GET " + v, "ListLayerVersions", s.listLayerVersions},
		{"GET " + v + "/{VersionNumber}", "GetLayerVersion", s.getLayerVersion},
		{"DELETE " + v + "/{VersionNumber}", "DeleteLayerVersion", s.deleteLayerVersion},
		{"POST " + v + "/{VersionNumber}/policy", "AddLayerVersionPermission", s.addLayerVersionPermission},
		{"GET " + v + "/{VersionNumber}/policy", "GetLayerVersionPolicy", s.getLayerVersionPolicy},
		{"DELETE " + v + "/{VersionNumber}/policy/{StatementId}", "RemoveLayerVersionPermission", s.removeLayerVersionPermission},
	}
}

// layerRef is a layer (and version) a request names.
type layerRef struct {
	account, name string
	version       int64
}

func (s *Service) layerARN(account, name string) string {
	return fmt.Sprintf("arn:aws:lambda:%s:%s:layer:%s", s.cfg.Region, account, name)
}

func (s *Service) layerVersionARN(account, name string, version int64) string {
	return s.layerARN(account, name) + ":" + strconv.FormatInt(version, 10)
}

// layerName parses {LayerName}: a name of the caller's account, or a
// layer's ARN.
func (s *Service) layerName(c *call) (layerRef, error) {
	raw := c.r.PathValue("LayerName")
	if len(raw) > 140 || !layerNameRe.MatchString(raw) {
		return layerRef{}, validation(raw, "layerName", "Member must satisfy regular expression pattern: "+layerPattern)
	}
	ref := layerRef{account: c.caller.Account, name: raw}
	if strings.HasPrefix(raw, "arn:") {
		parts := strings.Split(raw, ":")
		if parts[3] != s.cfg.Region {
			return ref, api.Errorf(api.ResourceNotFound, "Layers from '%s' are not reachable in this region ('%s')", parts[3], s.cfg.Region)
		}
		ref.account, ref.name = parts[4], parts[6]
	}
	return ref, nil
}

// layerVersion parses {LayerName} and {VersionNumber}.
func (s *Service) layerVersion(c *call) (layerRef, error) {
	ref, err := s.layerName(c)
	if err != nil {
		return ref, err
	}
	n, err := strconv.ParseInt(c.r.PathValue("VersionNumber"), 10, 64)
	if err != nil {
		return ref, api.Errorf(api.InvalidRequestBody, "Cannot deserialize value of type long from %s at 'VersionNumber'", c.r.PathValue("VersionNumber"))
	}
	ref.version = n
	return ref, nil
}

// ownLayer parses the request's layer with parse and refuses another
// account's: only its owner changes a layer, or lists its versions.
func (s *Service) ownLayer(c *call, parse func(*call) (layerRef, error)) (layerRef, error) {
	ref, err := parse(c)
	if err == nil && ref.account != c.caller.Account {
		err = s.layerDenied(c, ref)
	}
	return ref, err
}

func (s *Service) layerDenied(c *call, ref layerRef) *api.Error {
	resource := s.layerARN(ref.account, ref.name)
	if ref.version != 0 {
		resource = s.layerVersionARN(ref.account, ref.name, ref.version)
	}
	return api.Errorf(api.AccessDenied, "User: arn:aws:iam::%s:root is not authorized to perform: lambda:%s on resource: %s because no resource-based policy allows the lambda:%s action",
		c.caller.Account, c.op, resource, c.op)
}

func (s *Service) layerNotFound(ref layerRef) *api.Error {
	if ref.version == 0 {
		return api.Errorf(api.ResourceNotFound, "Layer not found: %s", s.layerARN(ref.account, ref.name))
	}
	return api.Errorf(api.ResourceNotFound, "Layer version %s does not exist.", s.layerVersionARN(ref.account, ref.name, ref.version))
}

// readLayerVersion reads a version the caller may use: its own, or one
// whose policy grants the caller's account (or everyone) GetLayerVersion.
// Another account's version that does not exist is refused like one the
// caller may not use.
func (s *Service) readLayerVersion(c *call, ref layerRef) (*metadata.LayerVersion, error) {
	ls, err := s.store.Layers(c.ctx)
	if err != nil {
		return nil, err
	}
	layer, err := ls.Get(c.ctx, ref.account, ref.name)
	if errors.Is(err, metadata.ErrNotFound) {
		if ref.account != c.caller.Account {
			return nil, s.layerDenied(c, ref)
		}
		return nil, s.layerNotFound(ref)
	}
	if err != nil {
		return nil, err
	}
	v, ok := layer.Version(ref.version)
	switch {
	case ref.account == c.caller.Account && !ok:
		return nil, s.layerNotFound(ref)
	case ref.account != c.caller.Account && (!ok || !grants(v.Policy, c.caller.Account)):
		return nil, s.layerDenied(c, ref)
	}
	return v, nil
}

func grants(p *metadata.LayerPolicy, account string) bool {
	if p == nil {
		return false
	}
	return slices.ContainsFunc(p.Statements, func(st metadata.LayerStatement) bool {
		return st.Action == layerAction && (st.Principal == "*" || st.Principal == account)
	})
}

// layerVersionDoc is Publish/GetLayerVersion's answer.
type layerVersionDoc struct {
	Content                 layerContent `json:"Content"`
	LayerArn                string       `json:"LayerArn"`
	LayerVersionArn         string       `json:"LayerVersionArn"`
	Description             string       `json:"Description,omitempty"`
	CreatedDate             string       `json:"CreatedDate"`
	Version                 int64        `json:"Version"`
	CompatibleRuntimes      []string     `json:"CompatibleRuntimes,omitempty"`
	LicenseInfo             string       `json:"LicenseInfo,omitempty"`
	CompatibleArchitectures []string     `json:"CompatibleArchitectures,omitempty"`
}

type layerContent struct {
	Location   string `json:"Location"`
	CodeSha256 string `json:"CodeSha256"`
	CodeSize   int64  `json:"CodeSize"`
}

// layerListItem is a version in ListLayers and ListLayerVersions.
type layerListItem struct {
	LayerVersionArn         string   `json:"LayerVersionArn"`
	Version                 int64    `json:"Version"`
	Description             string   `json:"Description,omitempty"`
	CreatedDate             string   `json:"CreatedDate"`
	CompatibleRuntimes      []string `json:"CompatibleRuntimes,omitempty"`
	LicenseInfo             string   `json:"LicenseInfo,omitempty"`
	CompatibleArchitectures []string `json:"CompatibleArchitectures,omitempty"`
}

func (s *Service) layerDoc(c *call, ref layerRef, v *metadata.LayerVersion) layerVersionDoc {
	return layerVersionDoc{
		Content:         layerContent{Location: s.codeURL(c.r, v.CodeSha256), CodeSha256: v.CodeSha256, CodeSize: v.CodeSize},
		LayerArn:        s.layerARN(ref.account, ref.name),
		LayerVersionArn: s.layerVersionARN(ref.account, ref.name, v.Version),
		Description:     v.Description, CreatedDate: v.CreatedDate, Version: v.Version,
		CompatibleRuntimes: v.CompatibleRuntimes, LicenseInfo: v.LicenseInfo, CompatibleArchitectures: v.CompatibleArchitectures,
	}
}

func (s *Service) layerItem(account, name string, v *metadata.LayerVersion) layerListItem {
	return layerListItem{LayerVersionArn: s.layerVersionARN(account, name, v.Version), Version: v.Version,
		Description: v.Description, CreatedDate: v.CreatedDate, CompatibleRuntimes: v.CompatibleRuntimes,
		LicenseInfo: v.LicenseInfo, CompatibleArchitectures: v.CompatibleArchitectures}
}

type publishLayerVersionRequest struct {
	Description             *string       `json:"Description"`
	Content                 *functionCode `json:"Content"`
	CompatibleRuntimes      []string      `json:"CompatibleRuntimes"`
	LicenseInfo             string        `json:"LicenseInfo"`
	CompatibleArchitectures []string      `json:"CompatibleArchitectures"`
}

func (s *Service) publishLayerVersion(c *call) error {
	ref, err := s.ownLayer(c, s.layerName)
	if err != nil {
		return err
	}
	var req publishLayerVersionRequest
	if err := c.decode(&req); err != nil {
		return err
	}
	if req.Content == nil {
		return validation(nil, "content", "Member must not be null")
	}
	if req.Description != nil {
		if err := checkDescription(*req.Description); err != nil {
			return err
		}
	}
	if len([]rune(req.LicenseInfo)) > 512 {
		return validation(req.LicenseInfo, "licenseInfo", "Member must have length less than or equal to 512")
	}
	if len(req.CompatibleRuntimes) > 15 {
		return validation("["+strings.Join(req.CompatibleRuntimes, ", ")+"]", "compatibleRuntimes", "Member must have length less than or equal to 15")
	}
	for _, r := range req.CompatibleRuntimes {
		if !runtimes.Known(r) {
			return validation("["+strings.Join(req.CompatibleRuntimes, ", ")+"]", "compatibleRuntimes",
				"Member must satisfy constraint: [Member must satisfy enum value set: ["+strings.Join(knownRuntimes(), ", ")+"]]")
		}
	}
	if len(req.CompatibleArchitectures) > 2 {
		return validation("["+strings.Join(req.CompatibleArchitectures, ", ")+"]", "compatibleArchitectures", "Member must have length less than or equal to 2")
	}
	for _, a := range req.CompatibleArchitectures {
		if a != "x86_64" && a != "arm64" {
			return validation("["+strings.Join(req.CompatibleArchitectures, ", ")+"]", "compatibleArchitectures",
				"Member must satisfy constraint: [Member must satisfy enum value set: [x86_64, arm64]]")
		}
	}
	if req.Content.ImageUri != "" {
		return api.Errorf(api.InvalidParameterValue, "Layers take a zip file, not an image.")
	}
	if err := zipSource(req.Content); err != nil {
		return err
	}
	code, err := s.putCode(c, req.Content.ZipFile, s.code.Put)
	if err != nil {
		return err
	}
	unzipped, err := s.code.Unzipped(c.ctx, code.Sha256)
	if err != nil {
		return err
	}
	ls, err := s.store.Layers(c.ctx)
	if err != nil {
		return err
	}
	var v *metadata.LayerVersion
	if _, err := ls.Modify(c.ctx, ref.account, ref.name, func(l *metadata.Layer) error {
		l.LastVersion++
		v = &metadata.LayerVersion{Version: l.LastVersion, CreatedDate: s.timestamp(), LicenseInfo: req.LicenseInfo,
			CompatibleRuntimes: req.CompatibleRuntimes, CompatibleArchitectures: req.CompatibleArchitectures,
			CodeSha256: code.Sha256, CodeSize: code.Size, Unzipped: unzipped}
		if req.Description != nil {
			v.Description = *req.Description
		}
		if l.Versions == nil {
			l.Versions = map[string]*metadata.LayerVersion{}
		}
		l.Versions[strconv.FormatInt(v.Version, 10)] = v
		return nil
	}); err != nil {
		return err
	}
	return c.reply(http.StatusCreated, s.layerDoc(c, ref, v))
}

func (s *Service) getLayerVersion(c *call) error {
	ref, err := s.layerVersion(c)
	if err != nil {
		return err
	}
	v, err := s.readLayerVersion(c, ref)
	if err != nil {
		return err
	}
	return c.reply(http.StatusOK, s.layerDoc(c, ref, v))
}

// parseLayerVersionARN parses a layer version's ARN (GetLayerVersionByArn,
// a function's Layers).
func (s *Service) parseLayerVersionARN(arn, field string) (layerRef, error) {
	m := layerArnRe.FindStringSubmatch(arn)
	if len(arn) > 140 || m == nil {
		return layerRef{}, validation(arn, field, `Member must satisfy regular expression pattern: arn:[a-zA-Z0-9-]+:lambda:[a-zA-Z0-9-]+:\d{12}:layer:[a-zA-Z0-9-_]+:[0-9]+`)
	}
	n, err := strconv.ParseInt(m[4], 10, 64)
	if err != nil || n < 1 {
		return layerRef{}, api.Errorf(api.InvalidParameterValue, "Layer version %s does not exist.", arn)
	}
	if m[1] != s.cfg.Region {
		return layerRef{}, api.Errorf(api.InvalidParameterValue, "Layers are not in the same region as the function. Layers are expected to be in region %s.", s.cfg.Region)
	}
	return layerRef{account: m[2], name: m[3], version: n}, nil
}

// listLayers serves ListLayers and, with ?find=LayerVersion,
// GetLayerVersionByArn (both GET /2018-10-31/layers).
func (s *Service) listLayers(c *call) error {
	q := c.r.URL.Query()
	if q.Get("find") == "LayerVersion" {
		c.op = "GetLayerVersionByArn"
		arn := q.Get("Arn")
		if arn == "" {
			return validation(nil, "arn", "Member must not be null")
		}
		ref, err := s.parseLayerVersionARN(arn, "arn")
		if err != nil {
			return err
		}
		v, err := s.readLayerVersion(c, ref)
		if err != nil {
			return err
		}
		return c.reply(http.StatusOK, s.layerDoc(c, ref, v))
	}
	match, p, err := layerListQuery(c.r)
	if err != nil {
		return err
	}
	ls, err := s.store.Layers(c.ctx)
	if err != nil {
		return err
	}
	layers, err := ls.List(c.ctx, c.caller.Account)
	if err != nil {
		return err
	}
	type item struct {
		LayerName             string        `json:"LayerName"`
		LayerArn              string        `json:"LayerArn"`
		LatestMatchingVersion layerListItem `json:"LatestMatchingVersion"`
	}
	var items []item
	for _, l := range layers {
		vs := l.SortedVersions()
		for i := len(vs) - 1; i >= 0; i-- {
			if match(vs[i]) {
				items = append(items, item{LayerName: l.Name, LayerArn: s.layerARN(l.Account, l.Name), LatestMatchingVersion: s.layerItem(l.Account, l.Name, vs[i])})
				break
			}
		}
	}
	page, next, err := paginate(items, func(it item) string { return it.LayerName }, p)
	if err != nil {
		return err
	}
	return c.page("Layers", append([]item{}, page...), next)
}

// layerListQuery reads the filters and page of ListLayers and
// ListLayerVersions.
func layerListQuery(r *http.Request) (func(*metadata.LayerVersion) bool, pageQuery, error) {
	q := r.URL.Query()
	runtime, arch := q.Get("CompatibleRuntime"), q.Get("CompatibleArchitecture")
	if runtime != "" && !runtimes.Known(runtime) {
		return nil, pageQuery{}, validation(runtime, "compatibleRuntime", "Member must satisfy enum value set: ["+strings.Join(knownRuntimes(), ", ")+"]")
	}
	if arch != "" && arch != "x86_64" && arch != "arm64" {
		return nil, pageQuery{}, validation(arch, "compatibleArchitecture", "Member must satisfy enum value set: [x86_64, arm64]")
	}
	if n, err := strconv.Atoi(q.Get("MaxItems")); err == nil && n > 50 {
		return nil, pageQuery{}, validation(n, "maxItems", "Member must have value less than or equal to 50")
	}
	p, err := listQuery(r, 50)
	match := func(v *metadata.LayerVersion) bool {
		return (runtime == "" || slices.Contains(v.CompatibleRuntimes, runtime)) &&
			(arch == "" || slices.Contains(v.CompatibleArchitectures, arch))
	}
	return match, p, err
}

func (s *Service) listLayerVersions(c *call) error {
	ref, err := s.ownLayer(c, s.layerName)
	if err != nil {
		return err
	}
	match, p, err := layerListQuery(c.r)
	if err != nil {
		return err
	}
	ls, err := s.store.Layers(c.ctx)
	if err != nil {
		return err
	}
	var items []layerListItem
	layer, err := ls.Get(c.ctx, ref.account, ref.name)
	switch {
	case errors.Is(err, metadata.ErrNotFound):
	case err != nil:
		return err
	default:
		vs := layer.SortedVersions()
		for i := len(vs) - 1; i >= 0; i-- { // newest first, as Lambda lists them
			if match(vs[i]) {
				items = append(items, s.layerItem(ref.account, ref.name, vs[i]))
			}
		}
	}
	page, next, err := paginate(items, func(it layerListItem) string { return fmt.Sprintf("%020d", 1<<62-it.Version) }, p)
	if err != nil {
		return err
	}
	return c.page("LayerVersions", append([]layerListItem{}, page...), next)
}

// deleteLayerVersion removes a version; functions that use it keep its
// content, as in Lambda. Deleting what does not exist succeeds.
func (s *Service) deleteLayerVersion(c *call) error {
	ref, err := s.ownLayer(c, s.layerVersion)
	if err != nil {
		return err
	}
	if err := s.changeLayerVersion(c, ref, func(l *metadata.Layer, _ *metadata.LayerVersion) error {
		delete(l.Versions, strconv.FormatInt(ref.version, 10))
		return nil
	}); err != nil && !errors.Is(err, errUnchanged) {
		var e *api.Error
		if !errors.As(err, &e) || e.Type != api.ResourceNotFound {
			return err
		}
	}
	return c.noContent()
}

// changeLayerVersion applies change to an existing version of the caller's layer.
func (s *Service) changeLayerVersion(c *call, ref layerRef, change func(*metadata.Layer, *metadata.LayerVersion) error) error {
	ls, err := s.store.Layers(c.ctx)
	if err != nil {
		return err
	}
	if _, err := ls.Get(c.ctx, ref.account, ref.name); err != nil {
		if errors.Is(err, metadata.ErrNotFound) {
			return s.layerNotFound(ref)
		}
		return err
	}
	_, err = ls.Modify(c.ctx, ref.account, ref.name, func(l *metadata.Layer) error {
		v, ok := l.Version(ref.version)
		if !ok {
			return s.layerNotFound(ref)
		}
		return change(l, v)
	})
	return err
}

type addLayerPermissionRequest struct {
	StatementId    string `json:"StatementId"`
	Action         string `json:"Action"`
	Principal      string `json:"Principal"`
	OrganizationId string `json:"OrganizationId"`
}

// statement is a permission as Lambda shows it in a policy document.
func (s *Service) statement(ref layerRef, st metadata.LayerStatement) map[string]any {
	var principal any = "*"
	if st.Principal != "*" {
		principal = map[string]string{"AWS": "arn:aws:iam::" + st.Principal + ":root"}
	}
	return map[string]any{"Sid": st.Sid, "Effect": "Allow", "Principal": principal, "Action": st.Action,
		"Resource": s.layerVersionARN(ref.account, ref.name, ref.version)}
}

func (s *Service) addLayerVersionPermission(c *call) error {
	ref, err := s.ownLayer(c, s.layerVersion)
	if err != nil {
		return err
	}
	var req addLayerPermissionRequest
	if err := c.decode(&req); err != nil {
		return err
	}
	switch {
	case req.StatementId == "":
		return validation(nil, "statementId", "Member must not be null")
	case !statementRe.MatchString(req.StatementId):
		return validation(req.StatementId, "statementId", "Member must satisfy regular expression pattern: ([a-zA-Z0-9-_]+)")
	case req.Action == "":
		return validation(nil, "action", "Member must not be null")
	case req.Action != layerAction:
		return validation(req.Action, "action", "Member must satisfy regular expression pattern: lambda:GetLayerVersion")
	case req.Principal == "":
		return validation(nil, "principal", "Member must not be null")
	}
	m := layerPrinRe.FindStringSubmatch(req.Principal)
	if m == nil {
		return validation(req.Principal, "principal", `Member must satisfy regular expression pattern: \d{12}|\*|arn:(aws[a-zA-Z-]*):iam::\d{12}:root`)
	}
	principal := req.Principal
	if m[3] != "" {
		principal = m[3]
	}
	if req.OrganizationId != "" {
		return api.Errorf(api.InvalidParameterValue, "Kiln has no AWS Organizations: grant the layer to an account or to everyone (*) without OrganizationId.")
	}
	revision := c.r.URL.Query().Get("RevisionId")
	st := metadata.LayerStatement{Sid: req.StatementId, Action: req.Action, Principal: principal}
	var policy *metadata.LayerPolicy
	err = s.changeLayerVersion(c, ref, func(_ *metadata.Layer, v *metadata.LayerVersion) error {
		if v.Policy == nil {
			v.Policy = &metadata.LayerPolicy{}
		}
		if revision != "" && revision != v.Policy.RevisionId {
			return revisionMismatch()
		}
		if slices.ContainsFunc(v.Policy.Statements, func(x metadata.LayerStatement) bool { return x.Sid == st.Sid }) {
			return api.Errorf(api.ResourceConflict, "The statement id (%s) provided already exists. Please provide a new statement id, or remove the existing statement.", st.Sid)
		}
		v.Policy.Statements = append(v.Policy.Statements, st)
		v.Policy.RevisionId = api.NewUUID()
		policy = v.Policy
		return nil
	})
	if err != nil {
		return err
	}
	doc, _ := json.Marshal(s.statement(ref, st))
	return c.reply(http.StatusCreated, map[string]string{"Statement": string(doc), "RevisionId": policy.RevisionId})
}

func noLayerPolicy() *api.Error {
	return api.Errorf(api.ResourceNotFound, "No policy is associated with the given resource.")
}

func (s *Service) getLayerVersionPolicy(c *call) error {
	ref, err := s.ownLayer(c, s.layerVersion)
	if err != nil {
		return err
	}
	v, err := s.readLayerVersion(c, ref)
	if err != nil {
		return err
	}
	if v.Policy == nil || len(v.Policy.Statements) == 0 {
		return noLayerPolicy()
	}
	sts := make([]map[string]any, len(v.Policy.Statements))
	for i, st := range v.Policy.Statements {
		sts[i] = s.statement(ref, st)
	}
	doc, _ := json.Marshal(map[string]any{"Version": "2012-10-17", "Id": "default", "Statement": sts})
	return c.reply(http.StatusOK, map[string]string{"Policy": string(doc), "RevisionId": v.Policy.RevisionId})
}

func (s *Service) removeLayerVersionPermission(c *call) error {
	ref, err := s.ownLayer(c, s.layerVersion)
	if err != nil {
		return err
	}
	sid := c.r.PathValue("StatementId")
	if !statementRe.MatchString(sid) {
		return validation(sid, "statementId", "Member must satisfy regular expression pattern: ([a-zA-Z0-9-_]+)")
	}
	revision := c.r.URL.Query().Get("RevisionId")
	err = s.changeLayerVersion(c, ref, func(_ *metadata.Layer, v *metadata.LayerVersion) error {
		if v.Policy == nil {
			return noLayerPolicy()
		}
		if revision != "" && revision != v.Policy.RevisionId {
			return revisionMismatch()
		}
		i := slices.IndexFunc(v.Policy.Statements, func(x metadata.LayerStatement) bool { return x.Sid == sid })
		if i < 0 {
			return api.Errorf(api.ResourceNotFound, "Statement %s is not found in resource policy.", sid)
		}
		v.Policy.Statements = slices.Delete(v.Policy.Statements, i, i+1)
		v.Policy.RevisionId = api.NewUUID()
		return nil
	})
	if err != nil {
		return err
	}
	return c.noContent()
}

// layersOf resolves the Layers member of a create or update: nil when it
// was not sent or is empty.
func (s *Service) layersOf(c *call, image bool, arns []string) ([]api.Layer, error) {
	if len(arns) == 0 {
		return nil, nil
	}
	if image {
		return nil, api.Errorf(api.InvalidParameterValue, "Layers are not supported for functions created with container images: add the files to the image.")
	}
	return s.functionLayers(c, arns)
}

// functionLayers resolves a function's Layers: at most five versions the
// caller may use, no two of one layer, in order.
func (s *Service) functionLayers(c *call, arns []string) ([]api.Layer, error) {
	if len(arns) > maxLayers {
		return nil, api.Errorf(api.InvalidParameterValue, "Cannot reference more than %d layers.", maxLayers)
	}
	out := make([]api.Layer, 0, len(arns))
	seen := map[string]string{}
	op := c.op
	defer func() { c.op = op }()
	for _, arn := range arns {
		ref, err := s.parseLayerVersionARN(arn, "layers")
		if err != nil {
			return nil, err
		}
		layer := s.layerARN(ref.account, ref.name)
		if other, ok := seen[layer]; ok {
			return nil, api.Errorf(api.InvalidParameterValue, "Two different versions of the same layer are not allowed to be referenced in the same function. %s and %s are versions of the same layer.", other, arn)
		}
		seen[layer] = arn
		c.op = "GetLayerVersion" // what using another account's layer needs
		v, err := s.readLayerVersion(c, ref)
		if err != nil {
			var e *api.Error
			if errors.As(err, &e) && e.Type == api.ResourceNotFound {
				return nil, api.Errorf(api.InvalidParameterValue, "Layer version %s does not exist.", arn)
			}
			return nil, err
		}
		out = append(out, api.Layer{Arn: arn, CodeSize: v.CodeSize, KilnCodeSha256: v.CodeSha256, KilnUnzipped: v.Unzipped})
	}
	return out, nil
}

// checkUnzipped applies Lambda's limit on a function's code and layers
// together.
// unzipped is the size of its own code unpacked.
func (s *Service) checkUnzipped(cfg *api.FunctionConfiguration, unzipped int64) error {
	total := unzipped
	for _, l := range cfg.Layers {
		total += l.KilnUnzipped
	}
	if limit := s.code.MaxUnzipped(); total > limit {
		return api.Errorf(api.InvalidParameterValue, "Function code combined with layers exceeds the maximum allowed size of %d bytes. The actual size is %d bytes.", limit, total)
	}
	return nil
}
