package accounts

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// Usage is the help of `kiln accounts`.
const Usage = `  accounts create [--name NAME]        make an account and its first key (the secret is shown once)
  accounts list                        accounts and their keys' ids
  accounts keys add ACCOUNT            another key for ACCOUNT (the secret is shown once)
  accounts keys remove ACCOUNT KEYID   delete a key; requests signed with it fail at once
      every accounts command takes --data DIR: the directory whose AWS config and
      credentials files (written by kiln up or kiln cluster up) name the endpoint
      and the admin key (default .kiln)
`

// Main runs `kiln accounts ARGS`, writing what it shows to out.
func Main(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("accounts", flag.ContinueOnError)
	data := fs.String("data", ".kiln", "directory of the AWS config and credentials files Kiln wrote")
	name := fs.String("name", "", "name of the account (create)")
	// Flags may come before or after the words.
	var words []string
	for rest := args; ; {
		if err := fs.Parse(rest); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		words, rest = append(words, fs.Arg(0)), fs.Args()[1:]
	}
	c, err := newClient(*data)
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	defer w.Flush()
	switch {
	case len(words) == 1 && words[0] == "create":
		b, _ := json.Marshal(map[string]string{"name": *name})
		var res struct {
			Account Account
			Key     Key
		}
		if err := c.do(ctx, http.MethodPost, PathAccounts, b, &res); err != nil {
			return err
		}
		fmt.Fprintf(w, "account\t%s\naccess key id\t%s\nsecret access key\t%s (shown once)\n", res.Account.ID, res.Key.AccessKeyID, res.Key.SecretAccessKey)
	case len(words) == 1 && words[0] == "list":
		var res struct{ Accounts []Listed }
		if err := c.do(ctx, http.MethodGet, PathAccounts, nil, &res); err != nil {
			return err
		}
		fmt.Fprintln(w, "ACCOUNT\tNAME\tADMIN\tKEYS")
		for _, a := range res.Accounts {
			keys := strings.Join(a.Keys, ",")
			if a.Admin {
				keys = strings.Join(append([]string{c.key + " (identity file)"}, a.Keys...), ",")
			}
			fmt.Fprintf(w, "%s\t%s\t%v\t%s\n", a.ID, a.Name, a.Admin, keys)
		}
	case len(words) == 3 && words[0] == "keys" && words[1] == "add":
		var res struct{ Key Key }
		if err := c.do(ctx, http.MethodPost, PathAccounts+"/"+words[2]+"/keys", nil, &res); err != nil {
			return err
		}
		fmt.Fprintf(w, "account\t%s\naccess key id\t%s\nsecret access key\t%s (shown once)\n", res.Key.Account, res.Key.AccessKeyID, res.Key.SecretAccessKey)
	case len(words) == 4 && words[0] == "keys" && words[1] == "remove":
		if err := c.do(ctx, http.MethodDelete, PathAccounts+"/"+words[2]+"/keys/"+words[3], nil, nil); err != nil {
			return err
		}
		fmt.Fprintf(w, "removed key %s of account %s\n", words[3], words[2])
	default:
		return fmt.Errorf("usage:\n%s", Usage)
	}
	return nil
}

// client calls the accounts API with the admin key of a data directory's
// AWS files.
type client struct {
	endpoint, region, key string
	creds                 aws.Credentials
	http                  *http.Client
}

func newClient(dir string) (*client, error) {
	conf, err := readINI(filepath.Join(dir, "config"))
	if err != nil {
		return nil, err
	}
	creds, err := readINI(filepath.Join(dir, "credentials"))
	if err != nil {
		return nil, err
	}
	c := &client{endpoint: conf["endpoint_url"], region: conf["region"], key: creds["aws_access_key_id"],
		creds: aws.Credentials{AccessKeyID: creds["aws_access_key_id"], SecretAccessKey: creds["aws_secret_access_key"]},
		http:  &http.Client{Timeout: time.Minute}}
	if c.endpoint == "" || c.creds.AccessKeyID == "" {
		return nil, fmt.Errorf("%s: no endpoint_url or access key in its config and credentials files", dir)
	}
	if ca := conf["ca_bundle"]; ca != "" {
		pem, err := os.ReadFile(ca)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		c.http.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	}
	return c, nil
}

// readINI reads the [default] section of an AWS config or credentials file.
func readINI(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out, section := map[string]string{}, ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "[") {
			section = strings.Trim(line, "[]")
			continue
		}
		if k, v, ok := strings.Cut(line, "="); ok && section == "default" {
			out[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	return out, sc.Err()
}

func (c *client) do(ctx context.Context, method, path string, body []byte, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(c.endpoint, "/")+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	sum := sha256.Sum256(body)
	hash := hex.EncodeToString(sum[:])
	req.Header.Set("X-Amz-Content-Sha256", hash)
	req.Header.Set("Content-Type", "application/json")
	if err := v4.NewSigner().SignHTTP(ctx, c.creds, req, hash, "lambda", c.region, time.Now()); err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		var e struct{ Message string }
		json.Unmarshal(b, &e)
		return fmt.Errorf("%s: %s %s", resp.Status, resp.Header.Get("X-Amzn-Errortype"), e.Message)
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(b, out)
}
