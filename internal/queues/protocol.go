package queues

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"net/http"
	"sort"
	"strconv"

	"github.com/kiln-dev/kiln/internal/api"
)

// writer answers in one of SQS's protocols.
type writer interface {
	result(w http.ResponseWriter, out any)
	error(w http.ResponseWriter, e *Error)
}

// jsonProtocol is AWS JSON 1.0. Errors carry the query code in
// x-amzn-query-error too, which query-compatible SDKs report as the code.
type jsonProtocol struct{}

func (jsonProtocol) result(w http.ResponseWriter, out any) {
	if out == nil {
		out = struct{}{}
	}
	b, err := json.Marshal(out)
	if err != nil {
		jsonProtocol{}.error(w, errorf(errInternal, "encoding response"))
		return
	}
	w.Header().Set("Content-Type", "application/x-amz-json-1.0")
	w.Header().Set("x-amzn-RequestId", api.NewUUID())
	w.Write(b)
}

func (jsonProtocol) error(w http.ResponseWriter, e *Error) {
	fault := "Sender"
	if !e.Sender {
		fault = "Receiver"
	}
	w.Header().Set("Content-Type", "application/x-amz-json-1.0")
	w.Header().Set("x-amzn-query-error", e.Query+";"+fault)
	w.Header().Set("x-amzn-RequestId", api.NewUUID())
	b, _ := json.Marshal(map[string]string{"__type": "com.amazonaws.sqs#" + e.Code, "message": e.Message})
	w.WriteHeader(e.Status)
	w.Write(b)
}

// queryProtocol answers a query request with XML.
type queryProtocol struct{ op string }

const xmlns = "http://queue.amazonaws.com/doc/2012-11-05/"

func (p queryProtocol) result(w http.ResponseWriter, out any) {
	var b bytes.Buffer
	b.WriteString(`<?xml version="1.0"?><` + p.op + `Response xmlns="` + xmlns + `">`)
	if out != nil {
		// Through JSON, so the XML is built from the very document the JSON
		// protocol sends.
		raw, err := json.Marshal(out)
		var doc any
		if err == nil {
			err = json.Unmarshal(raw, &doc)
		}
		if err != nil {
			p.error(w, errorf(errInternal, "encoding response"))
			return
		}
		p.element(&b, p.op+"Result", doc)
	}
	b.WriteString(`<ResponseMetadata><RequestId>` + api.NewUUID() + `</RequestId></ResponseMetadata></` + p.op + `Response>`)
	w.Header().Set("Content-Type", "text/xml")
	w.Write(b.Bytes())
}

func (queryProtocol) error(w http.ResponseWriter, e *Error) {
	fault := "Sender"
	if !e.Sender {
		fault = "Receiver"
	}
	var b bytes.Buffer
	b.WriteString(`<?xml version="1.0"?><ErrorResponse xmlns="` + xmlns + `"><Error><Type>` + fault + `</Type><Code>`)
	xml.EscapeText(&b, []byte(e.Query))
	b.WriteString(`</Code><Message>`)
	xml.EscapeText(&b, []byte(e.Message))
	b.WriteString(`</Message><Detail/></Error><RequestId>` + api.NewUUID() + `</RequestId></ErrorResponse>`)
	w.Header().Set("Content-Type", "text/xml")
	w.WriteHeader(e.Status)
	w.Write(b.Bytes())
}

// xmlMaps are the members that are maps, flattened in XML as repeated
// elements with a key and a Value; xmlLists the flattened lists, by the
// name of their elements.
var xmlMaps = map[string]struct{ elem, key string }{
	"Attributes":        {"Attribute", "Name"},
	"MessageAttributes": {"MessageAttribute", "Name"},
	"Tags":              {"Tag", "Key"},
}

func (p queryProtocol) listElem(member string) string {
	switch member {
	case "Messages":
		return "Message"
	case "QueueUrls":
		return "QueueUrl"
	case "Successful":
		return p.op + "ResultEntry"
	case "Failed":
		return "BatchResultErrorEntry"
	}
	return member
}

func (p queryProtocol) element(b *bytes.Buffer, name string, v any) {
	switch v := v.(type) {
	case map[string]any:
		b.WriteString("<" + name + ">")
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			p.member(b, k, v[k])
		}
		b.WriteString("</" + name + ">")
	case string:
		b.WriteString("<" + name + ">")
		xml.EscapeText(b, []byte(v))
		b.WriteString("</" + name + ">")
	case float64:
		b.WriteString("<" + name + ">" + strconv.FormatFloat(v, 'f', -1, 64) + "</" + name + ">")
	case bool:
		b.WriteString("<" + name + ">" + strconv.FormatBool(v) + "</" + name + ">")
	case nil:
	}
}

// member writes a structure's member, flattening lists and maps.
func (p queryProtocol) member(b *bytes.Buffer, name string, v any) {
	if mp, ok := xmlMaps[name]; ok {
		if m, ok := v.(map[string]any); ok {
			keys := make([]string, 0, len(m))
			for k := range m {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				b.WriteString("<" + mp.elem + ">")
				p.element(b, mp.key, k)
				p.element(b, "Value", m[k])
				b.WriteString("</" + mp.elem + ">")
			}
			return
		}
	}
	if list, ok := v.([]any); ok {
		for _, it := range list {
			p.element(b, p.listElem(name), it)
		}
		return
	}
	p.element(b, name, v)
}
