package flatten

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/kiln-dev/kiln/internal/chunk"
)

// layer is a tar built from headers and, for regular files, bodies.
type layer []tarEntry

type tarEntry struct {
	h    tar.Header
	body string
}

func (l layer) Uncompressed() (io.ReadCloser, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range l {
		h := e.h
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if err := tw.WriteHeader(&h); err != nil {
			return nil, err
		}
		io.WriteString(tw, e.body)
	}
	tw.Close()
	return io.NopCloser(&buf), nil
}

func file(name, body string) tarEntry { return tarEntry{tar.Header{Name: name}, body} }
func dir(name string) tarEntry {
	return tarEntry{tar.Header{Name: name, Typeflag: tar.TypeDir, Mode: 0o755}, ""}
}
func symlink(name, target string) tarEntry {
	return tarEntry{tar.Header{Name: name, Typeflag: tar.TypeSymlink, Linkname: target, Mode: 0o777}, ""}
}
func hardlink(name, target string) tarEntry {
	return tarEntry{tar.Header{Name: name, Typeflag: tar.TypeLink, Linkname: target}, ""}
}

// store keeps chunks in memory and reads files back.
type store map[chunk.ID][]byte

func (s store) content(r io.Reader) ([]chunk.Ref, error) {
	return chunk.Split(r, 4, []byte("salt"), func(ref chunk.Ref, ct []byte) error { s[ref.ID] = ct; return nil })
}

func (s store) read(e Entry) string {
	var b strings.Builder
	for _, r := range e.Chunks {
		p, err := chunk.Open(r, s[r.ID])
		if err != nil {
			panic(err)
		}
		b.Write(p)
	}
	return b.String()
}

// describe renders a tree one line per entry: path type mode uid:gid, then
// the content or target, and the inode for hard links.
func describe(s store, es []Entry) string {
	inoCount := map[uint64]int{}
	for _, e := range es {
		inoCount[e.Ino]++
	}
	var b strings.Builder
	for _, e := range es {
		fmt.Fprintf(&b, "%s %s %o %d:%d", e.Path, e.Type, e.Mode, e.UID, e.GID)
		switch e.Type {
		case File:
			fmt.Fprintf(&b, " %q", s.read(e))
		case Symlink:
			fmt.Fprintf(&b, " -> %s", e.Target)
		}
		if inoCount[e.Ino] > 1 {
			fmt.Fprintf(&b, " ino=%d", e.Ino)
		}
		for k, v := range e.Xattrs {
			fmt.Fprintf(&b, " %s=%s", k, v)
		}
		b.WriteString("\n")
	}
	return b.String()
}

func TestFlatten(t *testing.T) {
	setuid := file("bin/su", "x")
	setuid.h.Mode = 0o4755
	owned := file("home/app/f", "mine")
	owned.h.Uid, owned.h.Gid = 1000, 1001
	xattrs := file("x", "")
	xattrs.h.PAXRecords = map[string]string{"SCHILY.xattr.user.note": "kept", "SCHILY.xattr.security.capability": "\x01", "SCHILY.xattr.trusted.t": "1"}
	sticky := dir("tmp")
	sticky.h.Mode = 0o1777
	dev := tarEntry{tar.Header{Name: "dev/sda", Typeflag: tar.TypeBlock, Devmajor: 8}, ""}
	fifo := tarEntry{tar.Header{Name: "fifo", Typeflag: tar.TypeFifo}, ""}

	for _, tc := range []struct {
		name   string
		layers []Layer
		want   string
		report Report
	}{
		{"implicit parents", []Layer{layer{file("a/b/c", "hi")}}, `
. dir 755 0:0
a dir 755 0:0
a/b dir 755 0:0
a/b/c file 644 0:0 "hi"
`, Report{}},
		{"upper file replaces lower", []Layer{layer{file("f", "old"), file("g", "g")}, layer{file("f", "new")}}, `
. dir 755 0:0
f file 644 0:0 "new"
g file 644 0:0 "g"
`, Report{}},
		{"whiteout removes file and directory tree", []Layer{
			layer{file("keep", "k"), file("gone", "g"), file("d/x", "x"), file("d/y/z", "z")},
			layer{file(".wh.gone", ""), file(".wh.d", ""), file("d2/.wh.nothing", "")},
		}, `
. dir 755 0:0
keep file 644 0:0 "k"
`, Report{}},
		{"whiteout in the same layer hides only lower entries", []Layer{
			layer{file("f", "lower")},
			layer{file("f", "upper"), file(".wh.f", "")},
		}, `
. dir 755 0:0
f file 644 0:0 "upper"
`, Report{}},
		{"opaque directory", []Layer{
			layer{file("d/old", "o"), file("d/sub/old", "o"), file("other", "x")},
			layer{dir("d"), file("d/.wh..wh..opq", ""), file("d/new", "n")},
		}, `
. dir 755 0:0
d dir 755 0:0
d/new file 644 0:0 "n"
other file 644 0:0 "x"
`, Report{}},
		{"directory over directory keeps contents, takes metadata", []Layer{
			layer{dir("d"), file("d/f", "f")},
			layer{tarEntry{tar.Header{Name: "d", Typeflag: tar.TypeDir, Mode: 0o700, Uid: 5}, ""}},
		}, `
. dir 755 0:0
d dir 700 5:0
d/f file 644 0:0 "f"
`, Report{}},
		{"file replaces directory and directory replaces file", []Layer{
			layer{file("d/f", "f"), file("g", "g")},
			layer{file("d", "now a file"), file("g/h", "below")},
		}, `
. dir 755 0:0
d file 644 0:0 "now a file"
g dir 755 0:0
g/h file 644 0:0 "below"
`, Report{}},
		{"hard links share an inode, and keep the old content when one name is replaced", []Layer{
			layer{file("a", "same"), hardlink("b", "a"), hardlink("c", "./a")},
			layer{file("c", "other")},
		}, `
. dir 755 0:0
a file 644 0:0 "same" ino=2
b file 644 0:0 "same" ino=2
c file 644 0:0 "other"
`, Report{}},
		{"symlinks verbatim, even absolute or climbing", []Layer{layer{symlink("etc/p", "/etc/passwd"), symlink("up", "../../../../etc/shadow"), symlink("rel", "etc/p")}}, `
. dir 755 0:0
etc dir 755 0:0
etc/p symlink 777 0:0 -> /etc/passwd
rel symlink 777 0:0 -> etc/p
up symlink 777 0:0 -> ../../../../etc/shadow
`, Report{}},
		{"names are cleaned inside the root", []Layer{layer{file("./a/./b", "1"), file("/abs", "2"), file("c/../d", "3")}}, `
. dir 755 0:0
a dir 755 0:0
a/b file 644 0:0 "1"
abs file 644 0:0 "2"
d file 644 0:0 "3"
`, Report{}},
		{"ownership, sticky, setuid stripped, devices dropped, xattrs filtered", []Layer{layer{setuid, owned, sticky, dev, fifo, xattrs}}, `
. dir 755 0:0
bin dir 755 0:0
bin/su file 755 0:0 "x"
home dir 755 0:0
home/app dir 755 0:0
home/app/f file 644 1000:1001 "mine"
tmp dir 1777 0:0
x file 644 0:0 "" user.note=kept
`, Report{DroppedSpecial: 2, StrippedSetID: 1, DroppedXattrs: 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := store{}
			es, rep, err := Flatten(tc.layers, Limits{}, s.content)
			if err != nil {
				t.Fatal(err)
			}
			if got := describe(s, es); got != tc.want[1:] {
				t.Errorf("tree:\n%s\nwant:\n%s", got, tc.want[1:])
			}
			if rep != tc.report {
				t.Errorf("report %+v, want %+v", rep, tc.report)
			}
		})
	}
}

func TestFlattenRefusesHostile(t *testing.T) {
	many := layer{}
	for i := range 30 {
		many = append(many, file(fmt.Sprint("f", i), ""))
	}
	for _, tc := range []struct {
		name   string
		layers []Layer
		lim    Limits
		want   string
	}{
		{"climbing name", []Layer{layer{file("../../etc/passwd", "x")}}, Limits{}, "climbs out"},
		{"climbing name after cleaning", []Layer{layer{file("a/../../x", "x")}}, Limits{}, "climbs out"},
		{"write through a symlink in the same layer", []Layer{layer{symlink("a", "/etc"), file("a/passwd", "x")}}, Limits{}, `below the symbolic link "a"`},
		{"write through a symlink of a lower layer", []Layer{layer{symlink("lib", "/")}, layer{file("lib/x/y", "x")}}, Limits{}, "below the symbolic link"},
		{"hard link climbing", []Layer{layer{hardlink("l", "../../etc/shadow")}}, Limits{}, "climbs out"},
		{"hard link to nothing", []Layer{layer{hardlink("l", "missing")}}, Limits{}, "not a regular file"},
		{"hard link to a directory", []Layer{layer{dir("d"), hardlink("l", "d")}}, Limits{}, "not a regular file"},
		{"too many files", []Layer{many}, Limits{MaxEntries: 20}, "more than the limit of 20"},
		{"too many headers", []Layer{many, many, many}, Limits{MaxEntries: 20}, "more than 80 entries"},
		{"too large", []Layer{layer{file("a", "12345"), file("b", "123456")}}, Limits{MaxBytes: 10}, "larger than the limit of 10"},
		{"long name", []Layer{layer{file(strings.Repeat("n", 256), "")}}, Limits{}, "longer than 255"},
		{"root replaced by a file", []Layer{layer{file(".", "x")}}, Limits{}, "root is not a directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := Flatten(tc.layers, tc.lim, store{}.content)
			if !errors.Is(err, ErrHostile) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrHostile containing %q", err, tc.want)
			}
		})
	}
}

// TestDeterministic: the same files, in another order, with other mtimes,
// give the same tree and the same chunks.
func TestDeterministic(t *testing.T) {
	a := layer{file("b", "bee"), file("a/x", "ex"), symlink("c", "b")}
	b := layer{symlink("c", "b"), file("a/x", "ex"), file("b", "bee")}
	b[1].h.ModTime = b[1].h.ModTime.Add(1e15)
	s := store{}
	ea, _, err := Flatten([]Layer{a}, Limits{}, s.content)
	if err != nil {
		t.Fatal(err)
	}
	eb, _, err := Flatten([]Layer{b}, Limits{}, s.content)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(ea) != fmt.Sprint(eb) {
		t.Fatalf("trees differ:\n%v\n%v", ea, eb)
	}
}
