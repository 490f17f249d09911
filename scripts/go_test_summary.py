"""go_test_summary.py FILE: a summary of `go test -json` output: one line per
package (result, seconds), one per failed or skipped test with the lines
that say why, then the totals. Exits 1 when a test or package failed."""
import json, sys

results, outputs, pkgs = {}, {}, {}
for line in open(sys.argv[1]):
    try:
        e = json.loads(line)
    except ValueError:
        continue
    pkg, test, action = e.get("Package"), e.get("Test"), e.get("Action")
    if action == "output" and test:
        outputs.setdefault((pkg, test), []).append(e["Output"].rstrip())
    elif action in ("pass", "fail", "skip"):
        if test:
            results[(pkg, test)] = action
        else:
            pkgs[pkg] = (action, e.get("Elapsed", 0))
for pkg, (action, elapsed) in sorted(pkgs.items()):
    print(f"{action:4} {pkg} {elapsed:.1f}s")
for (pkg, test), action in sorted(results.items()):
    if action != "pass" and "/" not in test:
        why = [l.strip() for l in outputs.get((pkg, test), []) if "_test.go" in l or "--- " in l]
        print(f"{action.upper()} {pkg} {test}: {' | '.join(why[-3:])}")
count = {a: sum(1 for v in results.values() if v == a) for a in ("pass", "fail", "skip")}
print(f"tests: {count['pass']} passed, {count['fail']} failed, {count['skip']} skipped")
sys.exit(1 if count["fail"] or any(a == "fail" for a, _ in pkgs.values()) else 0)
