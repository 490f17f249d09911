package tfevents

import (
	"bytes"
	"encoding/json"
	"hash/crc32"
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestCRC32C checks the checksum against CRC-32C's check value and the
// mask against TFRecord's definition.
func TestCRC32C(t *testing.T) {
	if c := crc32.Checksum([]byte("123456789"), castagnoli); c != 0xe3069283 {
		t.Fatalf("CRC-32C of 123456789 = %#x, want 0xe3069283", c)
	}
	c := uint32(0xe3069283)
	if got, want := maskedCRC([]byte("123456789")), ((c>>15)|(c<<17))+0xa282ead8; got != want {
		t.Errorf("masked: %#x, want %#x", got, want)
	}
}

// reader is Python's protobuf runtime reading event files through classes
// protoc generates from event.proto, with its own TFRecord framing and
// CRC-32C: a reader that shares no code with the writer.
const reader = `
import json, struct, sys
sys.path.insert(0, sys.argv[1])
import event_pb2

def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF

def masked(data):
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF

out = []
with open(sys.argv[2], 'rb') as f:
    while True:
        head = f.read(12)
        if not head:
            break
        n, = struct.unpack('<Q', head[:8])
        assert struct.unpack('<I', head[8:])[0] == masked(head[:8]), 'length CRC'
        data = f.read(n)
        assert struct.unpack('<I', f.read(4))[0] == masked(data), 'data CRC'
        e = event_pb2.Event()
        e.ParseFromString(data)
        rec = {'step': e.step, 'wall_time': e.wall_time, 'what': e.WhichOneof('what')}
        if rec['what'] == 'file_version':
            rec['file_version'] = e.file_version
        elif rec['what'] == 'session_log':
            rec['status'] = e.session_log.status
        elif rec['what'] == 'summary':
            v = e.summary.value[0]
            rec['tag'] = v.tag
            rec['kind'] = v.WhichOneof('value')
            if rec['kind'] == 'simple_value':
                rec['value'] = v.simple_value
            elif rec['kind'] == 'image':
                rec['image'] = [v.image.height, v.image.width, v.image.colorspace, v.image.encoded_image_string.hex()]
            else:
                rec['plugin'] = v.metadata.plugin_data.plugin_name
                rec['dtype'] = v.tensor.dtype
                rec['text'] = [s.decode() for s in v.tensor.string_val]
        out.append(rec)
print(json.dumps(out))
`

type pyRecord struct {
	Step        int64
	WallTime    float64 `json:"wall_time"`
	What        string
	FileVersion string `json:"file_version"`
	Status      int
	Tag, Kind   string
	Value       float64
	Image       []any
	Plugin      string
	Dtype       int
	Text        []string
}

// readWithPython reads path with reader; it skips the test where protoc or
// Python's protobuf runtime is missing (scripts/setup.sh installs both).
func readWithPython(t *testing.T, path string) []pyRecord {
	t.Helper()
	protoc, err := exec.LookPath("protoc")
	if err != nil {
		t.Skip("no protoc (scripts/setup.sh installs protobuf-compiler)")
	}
	if exec.Command("/usr/bin/python3", "-c", "import google.protobuf").Run() != nil {
		t.Skip("no python3-protobuf (scripts/setup.sh installs it)")
	}
	gen := t.TempDir()
	if out, err := exec.Command(protoc, "--proto_path=.", "--python_out="+gen, "event.proto").CombinedOutput(); err != nil {
		t.Fatalf("protoc: %v\n%s", err, out)
	}
	out, err := exec.Command("/usr/bin/python3", "-c", reader, gen, path).Output()
	if err != nil {
		var stderr []byte
		if e, ok := err.(*exec.ExitError); ok {
			stderr = e.Stderr
		}
		t.Fatalf("python reader: %v\n%s", err, stderr)
	}
	var recs []pyRecord
	if err := json.Unmarshal(out, &recs); err != nil {
		t.Fatalf("python reader's output %q: %v", out, err)
	}
	return recs
}

func testPNG(t *testing.T) []byte {
	img := image.NewNRGBA(image.Rect(0, 0, 3, 2))
	img.Set(1, 1, color.NRGBA{200, 10, 30, 255})
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestPythonReadsEvents writes each kind of event and reads the file back
// with an independent reader: the framing, the CRCs and every field.
func TestPythonReadsEvents(t *testing.T) {
	dir := t.TempDir()
	w, err := Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(filepath.Base(w.Path), "events.out.tfevents.") {
		t.Errorf("file name %s", w.Path)
	}
	pic := testPNG(t)
	w.Scalar("train/loss", 10, 0.125)
	w.Scalar("train/lr", 10, 3e-4)
	w.Image("samples", 20, pic, 2, 3, 4)
	w.Text("config", 0, "    model: diffusion\n    seed: 1")
	w.Restart(21)
	w.Scalar("train/loss", 1<<40, math.Pi)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	recs := readWithPython(t, w.Path)
	if len(recs) != 7 {
		t.Fatalf("%d records, want 7: %+v", len(recs), recs)
	}
	if r := recs[0]; r.What != "file_version" || r.FileVersion != "brain.Event:2" || r.Step != 0 {
		t.Errorf("first record %+v, want the file version", r)
	}
	for i, want := range []struct {
		step  int64
		tag   string
		value float64
	}{{10, "train/loss", 0.125}, {10, "train/lr", float64(float32(3e-4))}, {1 << 40, "train/loss", float64(float32(math.Pi))}} {
		r := recs[[]int{1, 2, 6}[i]]
		if r.Kind != "simple_value" || r.Step != want.step || r.Tag != want.tag || r.Value != want.value {
			t.Errorf("scalar %d: %+v, want %+v", i, r, want)
		}
	}
	if r := recs[3]; r.Kind != "image" || r.Tag != "samples" || r.Step != 20 || len(r.Image) != 4 ||
		r.Image[0] != 2.0 || r.Image[1] != 3.0 || r.Image[2] != 4.0 || r.Image[3] != bytesHex(pic) {
		t.Errorf("image: %+v", r)
	}
	if r := recs[4]; r.Kind != "tensor" || r.Plugin != "text" || r.Dtype != 7 || len(r.Text) != 1 || r.Text[0] != "    model: diffusion\n    seed: 1" {
		t.Errorf("text: %+v", r)
	}
	if r := recs[5]; r.What != "session_log" || r.Status != 1 || r.Step != 21 {
		t.Errorf("restart: %+v, want SessionLog START at 21", r)
	}
	for _, r := range recs {
		if r.WallTime < 1.7e9 {
			t.Errorf("wall time %v", r.WallTime)
		}
	}
}

func bytesHex(b []byte) string {
	const digits = "0123456789abcdef"
	var s strings.Builder
	for _, c := range b {
		s.WriteByte(digits[c>>4])
		s.WriteByte(digits[c&15])
	}
	return s.String()
}

// TestRewrite keeps and renumbers events, leaves the file version alone,
// and reads a torn last record as the end of the file.
func TestRewrite(t *testing.T) {
	w, err := Create(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for step := int64(1); step <= 5; step++ {
		w.Scalar("loss", step*100, float64(step))
	}
	w.Image("samples", 300, testPNG(t), 2, 3, 4)
	w.Close()
	err = Rewrite(w.Path, func(step int64, _ bool) (int64, bool) { return step / 2, step <= 300 })
	if err != nil {
		t.Fatal(err)
	}
	records, err := ReadRecords(w.Path)
	if err != nil {
		t.Fatal(err)
	}
	var steps []int64
	for _, r := range records {
		s, _ := Step(r)
		steps = append(steps, s)
	}
	if want := []int64{0, 50, 100, 150, 150}; !equal(steps, want) {
		t.Errorf("steps after the rewrite %v, want %v", steps, want)
	}
	recs := readWithPython(t, w.Path)
	if len(recs) != 5 || recs[4].Kind != "image" || recs[3].Value != 3 {
		t.Errorf("python reads the rewritten file as %+v", recs)
	}
	// A torn record: the file ends where it begins.
	b, _ := os.ReadFile(w.Path)
	os.WriteFile(w.Path, b[:len(b)-7], 0o644)
	if records, err := ReadRecords(w.Path); err != nil || len(records) != 4 {
		t.Errorf("torn file: %d records, %v; want 4 and no error", len(records), err)
	}
	// A flipped bit is an error.
	b[20] ^= 1
	os.WriteFile(w.Path, b, 0o644)
	if _, err := ReadRecords(w.Path); err == nil || !strings.Contains(err.Error(), "CRC") {
		t.Errorf("corrupt file: %v, want a CRC error", err)
	}
}

func equal(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
