// Package datasets loads the data the models train on: numeric tables
// (the classical models fit those of third_party/dlfs5: height.txt,
// height_weight.txt, old_faithful.txt) and, for the neural models, image
// sets: MNIST-layout IDX files and folders of PNG and JPEG images (Load).
package datasets

import (
	"bufio"
	"fmt"
	"strconv"
	"strings"

	"kakusan/internal/files"
)

// LoadTable reads a whitespace-separated numeric table: one row a line, the
// same number of columns on every line (cols, or whatever the first line has
// when cols is 0). Blank lines and lines starting with '#' are skipped.
// maxTable bounds a numeric table file (the book's largest is 400 KiB).
const maxTable = 1 << 30

// Errors name the file and line.
func LoadTable(path string, cols int) ([][]float64, error) {
	f, err := files.Open(path, maxTable)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var rows [][]float64
	s := bufio.NewScanner(f)
	line := 0
	for s.Scan() {
		line++
		text := strings.TrimSpace(s.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		fields := strings.Fields(text)
		if cols == 0 {
			cols = len(fields)
		}
		if len(fields) != cols {
			return nil, fmt.Errorf("%s:%d: %d columns, want %d", path, line, len(fields), cols)
		}
		row := make([]float64, cols)
		for i, fld := range fields {
			v, err := strconv.ParseFloat(fld, 64)
			if err != nil {
				return nil, fmt.Errorf("%s:%d: column %d: %q is not a number", path, line, i+1, fld)
			}
			if v != v || v > 1e300 || v < -1e300 {
				return nil, fmt.Errorf("%s:%d: column %d: %q is not a finite number", path, line, i+1, fld)
			}
			row[i] = v
		}
		rows = append(rows, row)
	}
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(rows) == 0 {
		return nil, fmt.Errorf("%s: no data rows", path)
	}
	return rows, nil
}

// Column returns column i of rows.
func Column(rows [][]float64, i int) []float64 {
	out := make([]float64, len(rows))
	for n, r := range rows {
		out[n] = r[i]
	}
	return out
}
