package roles

import (
	"fmt"
	"os"
	"path/filepath"
)

// WriteAWSFiles writes an AWS-format credentials and config file, so that
// AWS_SHARED_CREDENTIALS_FILE/AWS_CONFIG_FILE plus --endpoint-url is all a
// client needs; caBundle, when set, is the CA the clients must trust.
func WriteAWSFiles(dir string, id Identity, region, endpoint, caBundle string) error {
	creds := fmt.Sprintf("[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n", id.AccessKeyID, id.SecretAccessKey)
	conf := fmt.Sprintf("[default]\nregion = %s\noutput = json\nendpoint_url = %s\n", region, endpoint)
	if caBundle != "" {
		conf += "ca_bundle = " + caBundle + "\n"
	}
	if err := WriteFile(filepath.Join(dir, "credentials"), []byte(creds), 0o600); err != nil {
		return err
	}
	return WriteFile(filepath.Join(dir, "config"), []byte(conf), 0o600)
}

// WriteFile replaces path with b at once (a reader sees the old file or
// the new one).
func WriteFile(path string, b []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
