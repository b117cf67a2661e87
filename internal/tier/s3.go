package tier

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// S3Config names an S3-compatible bucket (AWS S3, MinIO, Ceph RGW...).
type S3Config struct {
	Bucket string `json:"bucket"`
	// Prefix is put before every blob's name ("chunks/": chunks/NAME).
	Prefix string `json:"prefix,omitempty"`
	// Endpoint is the service's URL; empty means AWS's for Region.
	Endpoint string `json:"endpoint,omitempty"`
	// Region is the bucket's; empty means us-east-1.
	Region string `json:"region,omitempty"`
	// PathStyle addresses the bucket as ENDPOINT/BUCKET, not as
	// BUCKET.ENDPOINT (most S3-compatible servers want it).
	PathStyle       bool   `json:"path_style,omitempty"`
	AccessKeyID     string `json:"access_key_id"`
	SecretAccessKey string `json:"secret_access_key"`
}

// S3 keeps blobs as objects of an S3-compatible bucket: an authoritative
// store in place of the directory or the JetStream bucket. A put replaces an
// object atomically (readers see the old bytes or the new, which are the
// same: names are hashes).
type S3 struct {
	client *s3.Client
	cfg    S3Config
}

// OpenS3 returns the store of cfg's bucket, which must exist.
func OpenS3(ctx context.Context, cfg S3Config) (*S3, error) {
	if cfg.Bucket == "" {
		return nil, errors.New("tier: s3: no bucket")
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	client := s3.New(s3.Options{
		Region:       cfg.Region,
		Credentials:  credentials.NewStaticCredentialsProvider(cfg.AccessKeyID, cfg.SecretAccessKey, ""),
		UsePathStyle: cfg.PathStyle,
		BaseEndpoint: optional(cfg.Endpoint),
	})
	if _, err := client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: &cfg.Bucket}); err != nil {
		return nil, fmt.Errorf("tier: s3 bucket %s: %w", cfg.Bucket, err)
	}
	return &S3{client: client, cfg: cfg}, nil
}

func optional(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func (s *S3) key(name string) *string { return aws.String(s.cfg.Prefix + name) }

// missing reports S3's answer for an object that is not there.
func missing(err error) bool {
	var nsk *types.NoSuchKey
	var nf *types.NotFound
	var re *smithyhttp.ResponseError
	return errors.As(err, &nsk) || errors.As(err, &nf) || errors.As(err, &re) && re.HTTPStatusCode() == http.StatusNotFound
}

func (s *S3) Get(ctx context.Context, name string) ([]byte, error) {
	if err := validName(name); err != nil {
		return nil, err
	}
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: &s.cfg.Bucket, Key: s.key(name)})
	if missing(err) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	if err != nil {
		return nil, fmt.Errorf("tier: s3 get %s: %w", name, err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	if err != nil {
		return nil, fmt.Errorf("tier: s3 get %s: %w", name, err)
	}
	return b, nil
}

func (s *S3) Put(ctx context.Context, name string, data []byte) error {
	if err := validName(name); err != nil {
		return err
	}
	if _, err := s.client.PutObject(ctx, &s3.PutObjectInput{Bucket: &s.cfg.Bucket, Key: s.key(name),
		Body: bytes.NewReader(data), ContentLength: aws.Int64(int64(len(data)))}); err != nil {
		return fmt.Errorf("tier: s3 put %s: %w", name, err)
	}
	return nil
}

func (s *S3) Delete(ctx context.Context, name string) error {
	if err := validName(name); err != nil {
		return err
	}
	if _, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &s.cfg.Bucket, Key: s.key(name)}); err != nil && !missing(err) {
		return fmt.Errorf("tier: s3 delete %s: %w", name, err)
	}
	return nil
}

// List lists the objects under the prefix; a Put again writes the object
// again, renewing its LastModified.
func (s *S3) List(ctx context.Context) iter.Seq2[Blob, error] {
	return func(yield func(Blob, error) bool) {
		for o, err := range s.objects(ctx) {
			if err != nil {
				yield(Blob{}, err)
				return
			}
			name := strings.TrimPrefix(aws.ToString(o.Key), s.cfg.Prefix)
			if validName(name) != nil || o.LastModified == nil {
				continue
			}
			if !yield(Blob{Name: name, Size: aws.ToInt64(o.Size), Written: *o.LastModified}, nil) {
				return
			}
		}
	}
}

// Remove deletes b unless its LastModified moved since the listing. S3
// has no delete conditional on it everywhere, so a Put in the moment
// between the look and the delete is lost: the collection's grace is what
// protects an import's blobs here.
func (s *S3) Remove(ctx context.Context, b Blob) (bool, error) {
	if err := validName(b.Name); err != nil {
		return false, err
	}
	head, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &s.cfg.Bucket, Key: s.key(b.Name)})
	if missing(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("tier: s3 head %s: %w", b.Name, err)
	}
	// Listings and heads give LastModified to different precisions.
	if head.LastModified == nil || head.LastModified.Truncate(time.Second).After(b.Written.Truncate(time.Second)) {
		return false, nil
	}
	return true, s.Delete(ctx, b.Name)
}

// objects lists the objects under the prefix, page by page; a page that
// fails ends it with the error.
func (s *S3) objects(ctx context.Context) iter.Seq2[types.Object, error] {
	return func(yield func(types.Object, error) bool) {
		pages := s3.NewListObjectsV2Paginator(s.client, &s3.ListObjectsV2Input{Bucket: &s.cfg.Bucket, Prefix: &s.cfg.Prefix})
		for pages.HasMorePages() {
			page, err := pages.NextPage(ctx)
			if err != nil {
				yield(types.Object{}, fmt.Errorf("tier: s3 list: %w", err))
				return
			}
			for _, o := range page.Contents {
				if !yield(o, nil) {
					return
				}
			}
		}
	}
}

// LoadS3Config reads an S3Config from a JSON file, which holds a secret key
// and is refused when others may read it.
func LoadS3Config(path string) (S3Config, error) {
	var cfg S3Config
	fi, err := os.Stat(path)
	if err != nil {
		return cfg, fmt.Errorf("tier: s3 config: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return cfg, fmt.Errorf("tier: s3 config %s is mode %v: it holds a secret key, make it 0600", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err == nil {
		err = json.Unmarshal(b, &cfg)
	}
	if err != nil {
		return cfg, fmt.Errorf("tier: s3 config %s: %w", path, err)
	}
	return cfg, nil
}

// Size returns the bytes of all blobs under the prefix: what deduplication
// saves is measured here.
func (s *S3) Size(ctx context.Context) (int64, error) {
	var n int64
	for o, err := range s.objects(ctx) {
		if err != nil {
			return n, err
		}
		n += aws.ToInt64(o.Size)
	}
	return n, nil
}
