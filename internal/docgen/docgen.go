// Package docgen keeps the documentation in step with the code, for tests:
// Check compares a generated section of a Markdown file (docs/configuration.md's
// config keys and flags, rendered from the code's own tables) with what the
// code says now, and Commands lists the commands the README and docs/ show,
// for the commands' tests to check against their flags and configs.
package docgen

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// UpdateEnv names the variable that makes Check rewrite a stale section
// instead of failing (make docs sets it).
const UpdateEnv = "KAKUSAN_UPDATE_DOCS"

// markers delimit section name in a file.
func markers(name string) (begin, end string) {
	return fmt.Sprintf("<!-- BEGIN GENERATED %s (make docs writes it; do not edit) -->", name),
		fmt.Sprintf("<!-- END GENERATED %s -->", name)
}

// Check fails t unless the section name of the Markdown file path holds
// body. With UpdateEnv=1 it writes body there instead (the file and the
// section's markers must exist).
func Check(t testing.TB, path, name, body string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	begin, end := markers(name)
	text := string(b)
	i, j := strings.Index(text, begin), strings.Index(text, end)
	if i < 0 || j < i {
		t.Fatalf("%s has no section %q: add the lines\n%s\n%s", path, name, begin, end)
	}
	have := text[i+len(begin) : j]
	want := "\n" + strings.TrimSpace(body) + "\n"
	if have == want {
		return
	}
	if os.Getenv(UpdateEnv) == "1" {
		if err := os.WriteFile(path, []byte(text[:i+len(begin)]+want+text[j:]), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("%s: the section %q is not what the code says; run `make docs` and commit it. First difference at line %d:\n have %q\n want %q",
		path, name, diffLine(have, want)+1, lineAt(have, diffLine(have, want)), lineAt(want, diffLine(have, want)))
}

func diffLine(a, b string) int {
	x, y := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := range min(len(x), len(y)) {
		if x[i] != y[i] {
			return i
		}
	}
	return min(len(x), len(y))
}

func lineAt(s string, i int) string {
	lines := strings.Split(s, "\n")
	if i < len(lines) {
		return lines[i]
	}
	return ""
}

// Command is a command line shown in a ```sh block of the documentation.
type Command struct {
	Where string   // file:line
	Args  []string // after the program's name, split as a shell would for plain words and quotes
}

// Commands lists every command line of program (e.g. "bin/train") in the
// ```sh blocks of README.md and docs/*.md under root, continuation lines
// joined, comments and what follows a ;, && or | dropped.
func Commands(t testing.TB, root, program string) []Command {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	files = append([]string{filepath.Join(root, "README.md")}, files...)
	var out []Command
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(fh)
		inSh, n, start, line := false, 0, 0, ""
		for sc.Scan() {
			n++
			text := sc.Text()
			if strings.HasPrefix(strings.TrimSpace(text), "```") {
				inSh = strings.TrimSpace(text) == "```sh" && !inSh
				continue
			}
			if !inSh {
				continue
			}
			if line == "" {
				start = n
			}
			line += text
			if strings.HasSuffix(strings.TrimSpace(line), "\\") {
				line = strings.TrimSuffix(strings.TrimSpace(line), "\\") + " "
				continue
			}
			if args, ok := commandArgs(line, program); ok {
				out = append(out, Command{Where: fmt.Sprintf("%s:%d", f, start), Args: args})
			}
			line = ""
		}
		fh.Close()
	}
	return out
}

// commandArgs splits line as a shell would, for plain words, '...' and
// "...", if it runs program first.
func commandArgs(line, program string) ([]string, bool) {
	if i := strings.Index(line, " #"); i >= 0 {
		line = line[:i]
	}
	for _, sep := range []string{"&&", ";", "|"} {
		line, _, _ = strings.Cut(line, sep)
	}
	var words []string
	var cur strings.Builder
	quote, inWord := byte(0), false
	for i := 0; i < len(line); i++ {
		ch := line[i]
		switch {
		case quote != 0 && ch == quote:
			quote = 0
		case quote != 0:
			cur.WriteByte(ch)
		case ch == '\'' || ch == '"':
			quote, inWord = ch, true
		case ch == ' ' || ch == '\t':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteByte(ch)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	for i, w := range words {
		if w == program && (i == 0 || words[i-1] == "--no_python" || strings.Contains(words[i-1], "=")) {
			return words[i+1:], true
		}
	}
	return nil, false
}

// FlagsTable is a command's flags as a Markdown table: name (and
// shorthand), type, default and help, in the flag set's sorted order.
func FlagsTable(fs *pflag.FlagSet) string {
	var b strings.Builder
	b.WriteString("| flag | type | default | what it does |\n| --- | --- | --- | --- |\n")
	fs.VisitAll(func(f *pflag.Flag) {
		name := "`--" + f.Name + "`"
		if f.Shorthand != "" {
			name += ", `-" + f.Shorthand + "`"
		}
		typ, usage := pflag.UnquoteUsage(f)
		if typ == "" {
			typ = "true/false"
		}
		def := "-"
		if f.DefValue != "" && f.DefValue != "[]" && !(f.DefValue == "false" && f.Value.Type() == "bool") {
			def = "`" + f.DefValue + "`"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", name, typ, def, strings.ReplaceAll(usage, "|", `\|`))
	})
	return b.String()
}
