package safetensors

import (
	"bytes"
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func f32(vs ...float32) []byte {
	b := make([]byte, 4*len(vs))
	for i, v := range vs {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
	}
	return b
}

func sample() *File {
	return &File{
		Tensors: map[string]Tensor{
			"w":      {F32, []int64{2, 2}, f32(1, 2, 3, 4)},
			"b":      {F32, []int64{2}, f32(-1, 0.5)},
			"step":   {I64, []int64{}, []byte{7, 0, 0, 0, 0, 0, 0, 0}},
			"empty":  {F32, []int64{0, 3}, nil},
			"labels": {U8, []int64{3}, []byte{1, 2, 3}},
		},
		Metadata: map[string]string{"kind": "test"},
	}
}

func encode(t *testing.T, f *File) []byte {
	t.Helper()
	var buf bytes.Buffer
	if _, err := f.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestRoundTrip(t *testing.T) {
	want := sample()
	b := encode(t, want)
	if hl := binary.LittleEndian.Uint64(b); (8+hl)%8 != 0 {
		t.Errorf("data not 8-byte aligned: header %d", hl)
	}
	got, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Metadata, want.Metadata) {
		t.Errorf("metadata %v, want %v", got.Metadata, want.Metadata)
	}
	for name, w := range want.Tensors {
		g := got.Tensors[name]
		if g.DType != w.DType || !reflect.DeepEqual(g.Shape, w.Shape) || !bytes.Equal(g.Data, w.Data) {
			t.Errorf("%s: got %+v, want %+v", name, g, w)
		}
	}
}

// A file laid out by hand from the format's specification, unpadded header
// and all, as other writers may produce: {"a": [[1, 2]] f32, "n": [3] i64}.
func TestParseReference(t *testing.T) {
	header := `{"a":{"dtype":"F32","shape":[1,2],"data_offsets":[0,8]},"n":{"dtype":"I64","shape":[1],"data_offsets":[8,16]}}`
	var b []byte
	b = binary.LittleEndian.AppendUint64(b, uint64(len(header)))
	b = append(b, header...)
	b = append(b, f32(1, 2)...)
	b = binary.LittleEndian.AppendUint64(b, 3)
	f, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if a := f.Tensors["a"]; !bytes.Equal(a.Data, f32(1, 2)) || !reflect.DeepEqual(a.Shape, []int64{1, 2}) {
		t.Errorf("a = %+v", a)
	}
	if n := f.Tensors["n"]; binary.LittleEndian.Uint64(n.Data) != 3 {
		t.Errorf("n = %+v", n)
	}
}

func TestParseErrors(t *testing.T) {
	hdr := func(h string, data int) []byte {
		b := binary.LittleEndian.AppendUint64(nil, uint64(len(h)))
		return append(append(b, h...), make([]byte, data)...)
	}
	cases := []struct {
		name string
		b    []byte
		want string
	}{
		{"short", []byte{1, 2}, "too short"},
		{"header past end", binary.LittleEndian.AppendUint64(nil, 50), "runs past the end"},
		{"huge header", binary.LittleEndian.AppendUint64(nil, 1<<40), "exceeds"},
		{"not json", hdr("{nope", 0), "not a JSON object"},
		{"bad dtype", hdr(`{"x":{"dtype":"Q8","shape":[1],"data_offsets":[0,1]}}`, 1), "unknown dtype"},
		{"size mismatch", hdr(`{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}`, 4), "4 bytes for F32"},
		{"outside", hdr(`{"x":{"dtype":"U8","shape":[8],"data_offsets":[0,8]}}`, 4), "outside"},
		{"hole", hdr(`{"x":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}}`, 4), "expected 0"},
		{"overlap", hdr(`{"x":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"y":{"dtype":"U8","shape":[2],"data_offsets":[1,3]}}`, 3), "expected 2"},
		{"trailing", hdr(`{"x":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}`, 3), "trailing"},
		{"negative dim", hdr(`{"x":{"dtype":"U8","shape":[-2],"data_offsets":[0,0]}}`, 0), "negative"},
		{"unknown field", hdr(`{"x":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"extra":1}}`, 1), "unknown field"},
		{"bad metadata", hdr(`{"__metadata__":{"a":1}}`, 0), "__metadata__"},
	}
	for _, c := range cases {
		_, err := Parse(c.b)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want it to mention %q", c.name, err, c.want)
		}
	}
}

func TestWriteFileAtomicAndNamed(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ck.safetensors")
	if err := WriteFile(path, sample()); err != nil {
		t.Fatal(err)
	}
	// A failing write (bad tensor) must leave the earlier file intact and no temp file.
	bad := &File{Tensors: map[string]Tensor{"x": {F32, []int64{3}, f32(1)}}}
	if err := WriteFile(path, bad); err == nil {
		t.Fatal("write of inconsistent tensor succeeded")
	}
	if _, err := ReadFile(path); err != nil {
		t.Fatalf("earlier file damaged: %v", err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("left behind %d files", len(entries))
	}
	os.WriteFile(path, []byte("garbage!garbage!"), 0o644)
	if _, err := ReadFile(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("corrupt file error %v does not name %s", err, path)
	}
}

func FuzzParse(f *testing.F) {
	var buf bytes.Buffer
	sample().WriteTo(&buf)
	f.Add(buf.Bytes())
	f.Add([]byte{})
	f.Add(binary.LittleEndian.AppendUint64(nil, 2))
	f.Fuzz(func(t *testing.T, b []byte) {
		file, err := Parse(b)
		if err != nil {
			return
		}
		// Whatever parses must re-encode and parse to the same tensors.
		var out bytes.Buffer
		if _, err := file.WriteTo(&out); err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		again, err := Parse(out.Bytes())
		if err != nil {
			t.Fatalf("re-parse: %v", err)
		}
		if len(again.Tensors) != len(file.Tensors) {
			t.Fatalf("tensor count %d != %d", len(again.Tensors), len(file.Tensors))
		}
		for name, x := range file.Tensors {
			y := again.Tensors[name]
			if x.DType != y.DType || !bytes.Equal(x.Data, y.Data) || len(x.Shape) != len(y.Shape) {
				t.Fatalf("%s changed across a round trip", name)
			}
		}
	})
}
