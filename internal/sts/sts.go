// Package sts serves the one AWS Security Token Service call that deploy
// tools and SDKs make of any AWS endpoint they are pointed at:
// GetCallerIdentity, which tells the signing key's account (lambroll and
// others build function ARNs from it). It answers the query protocol, as
// the AWS CLI and boto3 send it, and the JSON protocol.
package sts

import (
	"encoding/json"
	"encoding/xml"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/kiln-dev/kiln/internal/api"
	"github.com/kiln-dev/kiln/internal/auth"
)

// SigningService is the service name STS requests are signed for, and
// TargetPrefix starts the X-Amz-Target of its JSON protocol.
const (
	SigningService = "sts"
	TargetPrefix   = "AWSSecurityTokenServiceV20110615."
)

// Identity is GetCallerIdentity's result.
type Identity struct {
	Account string `json:"Account" xml:"Account"`
	Arn     string `json:"Arn" xml:"Arn"`
	UserId  string `json:"UserId" xml:"UserId"`
}

// IdentityOf is who c is: every key of an account acts as the account's
// root user, a function's credentials as its execution role's session.
func IdentityOf(c auth.Caller) Identity {
	if c.Session != "" {
		return Identity{Account: c.Account, Arn: "arn:aws:sts::" + c.Account + ":assumed-role/kiln-function/" + c.Session,
			UserId: "AROAKILNFUNCTION:" + c.Session}
	}
	return Identity{Account: c.Account, Arn: "arn:aws:iam::" + c.Account + ":root", UserId: c.Account}
}

// Handler serves STS on POST / behind auth.Middleware.
func Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		caller, _ := auth.FromContext(r.Context())
		requestID := api.NewUUID()
		w.Header().Set("X-Amzn-Requestid", requestID)
		if target := r.Header.Get("X-Amz-Target"); target != "" {
			op, _ := strings.CutPrefix(target, TargetPrefix)
			if op != "GetCallerIdentity" {
				w.Header().Set("Content-Type", "application/x-amz-json-1.0")
				w.WriteHeader(http.StatusBadRequest)
				json.NewEncoder(w).Encode(map[string]string{"__type": "InvalidAction", "message": "Could not find operation " + op + " for version 2011-06-15"})
				return
			}
			w.Header().Set("Content-Type", "application/x-amz-json-1.0")
			json.NewEncoder(w).Encode(IdentityOf(caller))
			return
		}
		form, err := url.ParseQuery(string(auth.Body(r)))
		if err == nil && r.URL.RawQuery != "" { // Action may be in the query string too
			q := r.URL.Query()
			for k, v := range form {
				q[k] = v
			}
			form = q
		}
		w.Header().Set("Content-Type", "text/xml")
		switch action := form.Get("Action"); {
		case err != nil:
			queryError(w, requestID, "MalformedQueryString", "The request body is not a form.")
		case action != "GetCallerIdentity":
			queryError(w, requestID, "InvalidAction", fmt.Sprintf("Could not find operation %s for version %s", action, form.Get("Version")))
		default:
			type result struct {
				XMLName   xml.Name `xml:"https://sts.amazonaws.com/doc/2011-06-15/ GetCallerIdentityResponse"`
				Result    Identity `xml:"GetCallerIdentityResult"`
				RequestID string   `xml:"ResponseMetadata>RequestId"`
			}
			b, _ := xml.Marshal(result{Result: IdentityOf(caller), RequestID: requestID})
			w.Write(b)
		}
	})
}

func queryError(w http.ResponseWriter, requestID, code, message string) {
	type body struct {
		XMLName   xml.Name `xml:"https://sts.amazonaws.com/doc/2011-06-15/ ErrorResponse"`
		Type      string   `xml:"Error>Type"`
		Code      string   `xml:"Error>Code"`
		Message   string   `xml:"Error>Message"`
		RequestID string   `xml:"RequestId"`
	}
	b, _ := xml.Marshal(body{Type: "Sender", Code: code, Message: message, RequestID: requestID})
	w.WriteHeader(http.StatusBadRequest)
	w.Write(b)
}
