package datasets

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadShippedTables(t *testing.T) {
	for _, c := range []struct {
		file       string
		cols, rows int
	}{{"height.txt", 1, 25000}, {"height_weight.txt", 2, 25000}, {"old_faithful.txt", 2, 272}} {
		rows, err := LoadTable(filepath.Join("..", "third_party", "dlfs5", c.file), c.cols)
		if err != nil {
			t.Fatal(err)
		}
		if len(rows) != c.rows {
			t.Errorf("%s: %d rows, want %d", c.file, len(rows), c.rows)
		}
	}
}

func TestLoadTableErrors(t *testing.T) {
	dir := t.TempDir()
	cases := []struct{ name, body, want string }{
		{"nonnumeric", "1 2\n3 x\n", "bad.txt:2: column 2: \"x\" is not a number"},
		{"columns", "1 2\n3\n", "bad.txt:2: 1 columns, want 2"},
		{"empty", "\n# only a comment\n", "bad.txt: no data rows"},
		{"nan", "1 NaN\n", "not a finite number"},
	}
	for _, c := range cases {
		p := filepath.Join(dir, "bad.txt")
		os.WriteFile(p, []byte(c.body), 0o644)
		_, err := LoadTable(p, 2)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want %q", c.name, err, c.want)
		}
	}
	if _, err := LoadTable(filepath.Join(dir, "missing.txt"), 1); err == nil || !strings.Contains(err.Error(), "missing.txt") {
		t.Errorf("missing file: %v", err)
	}
}
