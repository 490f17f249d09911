package eval

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzReadManifests feeds the manifest reader arbitrary lines: it may
// refuse them, never panic, and never accept a file outside the folder.
func FuzzReadManifests(f *testing.F) {
	f.Add([]byte(`{"file":"000000_label3.png","index":0,"seed":1,"label":3}` + "\n"))
	f.Add([]byte(`{"file":"../x.png"}` + "\n"))
	f.Add([]byte(`{"file":"a.png","label":-1}` + "\n" + `{"file":"b.png"}`))
	f.Add([]byte("\n\n{}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "manifest.jsonl"), b, 0o644); err != nil {
			t.Fatal(err)
		}
		entries, err := readManifests(dir)
		if err != nil {
			return
		}
		for _, e := range entries {
			if e.File == "" || filepath.Base(e.File) != e.File || e.File[0] == '.' {
				t.Errorf("accepted file %q", e.File)
			}
		}
		LoadSamples(dir, mnist) // the PNGs are missing: an error, never a panic
	})
}
