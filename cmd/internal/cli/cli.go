// Package cli holds what kakusan's commands share: flag parsing that takes
// Go-style single-dash long flags (-config x.yaml) as well as --config.
package cli

import (
	"fmt"
	"os"
	"runtime/debug"
	"strings"

	"github.com/spf13/pflag"

	"kakusan/torch"
)

// Parse parses args into fs after rewriting "-name" to "--name" for every
// long flag fs defines, so both spellings work. The commands take flags
// only: a stray argument is an error, not something silently dropped.
// Where fs has VersionFlag's --version and it is given, Parse prints
// Version to stdout and returns pflag.ErrHelp: the commands stop there as
// they do after --help.
func Parse(fs *pflag.FlagSet, args []string) error {
	if err := fs.Parse(Normalize(fs, args)); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q: %s takes flags only (see --help)", fs.Arg(0), fs.Name())
	}
	if v, err := fs.GetBool("version"); err == nil && v {
		fmt.Print(Version(fs.Name()))
		return pflag.ErrHelp
	}
	return nil
}

// Normalize rewrites single-dash long flags that fs knows to double-dash.
func Normalize(fs *pflag.FlagSet, args []string) []string {
	out := make([]string, 0, len(args))
	for i, a := range args {
		if a == "--" {
			return append(out, args[i:]...)
		}
		if len(a) > 2 && a[0] == '-' && a[1] != '-' {
			name, _, _ := strings.Cut(a[1:], "=")
			if len(name) > 1 && fs.Lookup(name) != nil {
				a = "-" + a
			}
		}
		out = append(out, a)
	}
	return out
}

// Recover turns a panic that escaped cmd's own error handling into a
// message asking for a bug report and exit status 70 (EX_SOFTWARE), never
// a Go stack trace for user input: defer it first thing in main.
// KAKUSAN_DEBUG=1 adds the stack, for whoever fixes it.
func Recover(cmd string) {
	if r := recover(); r != nil {
		fmt.Fprintf(os.Stderr, "%s: internal error: %v\nThis is a bug in kakusan: please report it with the command line that caused it.\n", cmd, r)
		if os.Getenv("KAKUSAN_DEBUG") != "" {
			if p, ok := r.(*torch.ThreadPanic); ok {
				os.Stderr.WriteString(p.Stack)
			} else {
				os.Stderr.Write(debug.Stack())
			}
		}
		os.Exit(70)
	}
}

// Fatal prints "cmd: err" and exits with status 1.
func Fatal(cmd string, err error) {
	fmt.Fprintf(os.Stderr, "%s: %v\n", cmd, err)
	os.Exit(1)
}

// revisionFlag is the VCS revision where the build had no repository to
// read it from (a container's build context): the linker sets it with
// -X kakusan/cmd/internal/cli.revisionFlag=REV.
var revisionFlag string

// VersionFlag adds --version to fs.
func VersionFlag(fs *pflag.FlagSet) *bool {
	return fs.Bool("version", false, "print kakusan's version, its revision and what the shim was built with, and exit")
}

// Version is what --version prints for cmd: the module's version and VCS
// revision from the binary's build information, the Go release, and the
// shim's ABI, libtorch and compiled-in CUDA, CUDA graphs, NCCL and Gloo.
func Version(cmd string) string {
	version, revision, dirty, goVersion := "(unknown)", "unknown", "", "unknown"
	if revisionFlag != "" {
		revision = revisionFlag
	}
	if info, ok := debug.ReadBuildInfo(); ok {
		version, goVersion = info.Main.Version, info.GoVersion
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				revision = s.Value
			case "vcs.modified":
				if s.Value == "true" {
					dirty = " (modified)"
				}
			}
		}
	}
	return fmt.Sprintf("%s: kakusan %s, revision %s%s, %s\n%s: %s\n", cmd, version, revision, dirty, goVersion, cmd, torch.Build())
}
