# shellcheck shell=bash
# `scripts/bench engine-compare`: the agent engine of two builds side by side (issue 11), in one run.
# Sourced by scripts/bench with $repo set and the mode's arguments in "$@"; see bench/README.md,
# "Engine before/after (issue 11)".
#
# Each ref (a commit, or a folder holding a Modular tree, e.g. AFTER=. for the working tree as it is)
# is built in Release: hosts/Modular.Agent, hosts/Modular.Server and tests/Modular.Core.Tests. A commit
# gets a temporary git worktree, removed afterwards. Then, ROUNDS times, before then after:
#   tunnel, lazy wake  tests/Modular.E2E.Tests EngineCompareBenchmark of THIS tree, driving that build's
#                      binaries (MODULAR_AGENT_DIR, MODULAR_SERVER_DIR): iperf3 TCP through two userspace
#                      agents, then the first ping reply from an idle peer between two lazy agents
#   map apply          that build's own tests/Modular.Core.Tests EngineBenchmarkTests (1k and 10k peers,
#                      first apply and unchanged re-apply), parsed from its printed line
# and prints per round, per build median and spread (max - min), and the verdict: no regression when the
# after median is at least the before median minus the before spread (throughput), or at most the before
# median plus the before spread (times). Writes bench/results/engine-compare-<UTC date>.json and the table
# in bench/README.md.
#   BEFORE=c99fb55 AFTER=HEAD ROUNDS=5 IPERF_SECONDS=3 WAKES=3 (as arguments KEY=VALUE or in the environment)

set -euo pipefail

for argument in "$@"; do
  case "$argument" in
    BEFORE=* | AFTER=* | ROUNDS=* | IPERF_SECONDS=* | WAKES=*) export "${argument?}" ;;
    *) echo "scripts/bench engine-compare: unknown argument '$argument' (BEFORE= AFTER= ROUNDS= IPERF_SECONDS= WAKES=)" >&2; exit 2 ;;
  esac
done
before_ref="${BEFORE:-c99fb55}"
after_ref="${AFTER:-HEAD}"
rounds="${ROUNDS:-5}"
iperf_seconds="${IPERF_SECONDS:-3}"
wakes="${WAKES:-3}"
stamp="$(date -u +%Y-%m-%dT%H-%M-%SZ)"
results_dir="$repo/bench/results"
started="$(date +%s)"

[[ $EUID -eq 0 ]] || { echo "scripts/bench engine-compare needs root (network namespaces, TUN devices)" >&2; exit 1; }
for tool in ip nft ping iperf3 jq git dotnet; do
  command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done

work="$(mktemp -d /tmp/modular-engine-compare.XXXXXX)"

# The namespaces a benchmark run makes are named mdl-<ec*|et*|el*>-<test host pid>-<n> (MeshRig,
# NetworkNamespace.Create). MeshRig removes them itself; this sweeps the ones of a test host that is gone
# (killed at its time limit), never those of a live process, so a test running beside us keeps its own.
sweep_namespaces() {
  local ns pid
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^mdl-(ecbr|ecsrv|et[12]|el[12])-[0-9]+-[0-9]+$' || true); do
    pid="$(cut -d- -f3 <<<"$ns")"
    if [[ ! -d "/proc/$pid" ]]; then
      for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
      ip netns del "$ns" 2>/dev/null || true
    fi
  done
}

cleanup_compare() {
  sweep_namespaces
  local tree
  for tree in "$work/before" "$work/after"; do
    [[ -d "$tree" ]] && { git -C "$repo" worktree remove --force "$tree" 2>/dev/null || true; }
  done
  git -C "$repo" worktree prune 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup_compare EXIT INT TERM

# tree_of LABEL REF: prints the folder holding REF's tree (for a commit, the temporary worktree $work/LABEL,
# which cleanup_compare removes).
tree_of() {
  local label="$1" ref="$2"
  if [[ -d "$ref" ]]; then
    (cd "$ref" && pwd)
    return
  fi
  local dir="$work/$label"
  git -C "$repo" worktree add --detach --quiet "$dir" "$ref" >&2
  echo "$dir"
}

build_tree() {
  local tree="$1" project
  for project in hosts/Modular.Agent/Modular.Agent.csproj hosts/Modular.Server/Modular.Server.csproj tests/Modular.Core.Tests/Modular.Core.Tests.csproj; do
    echo "building $tree/$project (Release)..." >&2
    nice dotnet build "$tree/$project" -c Release -nologo -v q -clp:ErrorsOnly >&2
  done
}

describe() { git -C "$1" log -1 --format='%h %s' 2>/dev/null | cut -c1-80 || echo "$1"; }

before_tree="$(tree_of before "$before_ref")"
after_tree="$(tree_of after "$after_ref")"
build_tree "$before_tree"
build_tree "$after_tree"
echo "building $repo/tests/Modular.E2E.Tests (Release, the harness)..." >&2
nice dotnet build "$repo/tests/Modular.E2E.Tests/Modular.E2E.Tests.csproj" -c Release -nologo -v q -clp:ErrorsOnly >&2
build_seconds=$(( $(date +%s) - started ))

# measure BUILD TREE ROUND: appends one JSON line of that build's numbers for the round to $work/runs.jsonl.
measure() {
  local build="$1" tree="$2" round="$3"
  local out="$work/$build-$round.json" log="$work/$build-$round.log"
  rm -f "$out"
  # Tunnel and lazy wake: this tree's test, that build's binaries. Bounded: the test host is killed when
  # it hangs, the whole run after 6 minutes.
  MODULAR_BENCH=1 MODULAR_BENCH_OUT="$out" MODULAR_BENCH_IPERF_SECONDS="$iperf_seconds" MODULAR_BENCH_WAKES="$wakes" \
    MODULAR_AGENT_DIR="$tree/hosts/Modular.Agent/bin/Release/net10.0" MODULAR_SERVER_DIR="$tree/hosts/Modular.Server/bin/Release/net10.0" \
    timeout -k 20 360 dotnet test "$repo/tests/Modular.E2E.Tests/Modular.E2E.Tests.csproj" -c Release --no-build -nologo \
      --filter "FullyQualifiedName~EngineCompareBenchmark" --blame-hang --blame-hang-timeout 300s --blame-hang-dump-type none \
      --logger "console;verbosity=detailed" >"$log" 2>&1 || echo "round $round $build: the E2E benchmark failed (log kept in bench/results/engine-compare-$stamp-$build-$round.log)" >&2
  sweep_namespaces
  if [[ ! -s "$out" ]]; then
    mkdir -p "$results_dir" && cp "$log" "$results_dir/engine-compare-$stamp-$build-$round.log"
    echo '{}' >"$out"
  fi
  # Map apply: that build's own test (its engine's API), printed as
  # "map apply, 1000 peers: first 44 ms, unchanged re-apply 6 ms, ...".
  local apply
  apply="$(MODULAR_BENCH=1 timeout -k 20 300 dotnet test "$tree/tests/Modular.Core.Tests/Modular.Core.Tests.csproj" -c Release --no-build -nologo \
    --filter "FullyQualifiedName~EngineBenchmarkTests" --logger "console;verbosity=detailed" 2>&1 || true)"
  local map_json
  map_json="$(grep -oE 'map apply, [0-9]+ peers: first [0-9.]+ ms, unchanged re-apply [0-9.]+ ms' <<<"$apply" \
    | sed -E 's/map apply, ([0-9]+) peers: first ([0-9.]+) ms, unchanged re-apply ([0-9.]+) ms/\1 \2 \3/' \
    | jq -Rsc 'split("\n") | map(select(length > 0) | split(" ") | map(tonumber))
        | map({(if .[0] == 1000 then "apply_1k_ms" else "apply_10k_ms" end): .[1],
               (if .[0] == 1000 then "reapply_1k_ms" else "reapply_10k_ms" end): .[2]}) | add // {}')"
  jq -c --arg build "$build" --argjson round "$round" --argjson map "$map_json" \
    '{round: $round, build: $build, tunnel_gbit_per_s: (.tunnel_gbit_per_s // null), wake_ms: (.wake_median_ms // null),
      wake_each_ms: (.wake_ms // null), wake_lost: (.wake_lost // null)} + $map' "$out" >>"$work/runs.jsonl"
  echo "round $round $build: $(tail -1 "$work/runs.jsonl")" >&2
}

: >"$work/runs.jsonl"
for round in $(seq "$rounds"); do
  measure before "$before_tree" "$round"
  measure after "$after_tree" "$round"
done
measure_seconds=$(( $(date +%s) - started - build_seconds ))

mkdir -p "$results_dir"
out="$results_dir/engine-compare-$stamp.json"
jq -s \
  --arg date "$stamp" --arg kernel "$(uname -r)" --arg cpus "$(nproc)" --arg load "$(cut -d' ' -f1-3 /proc/loadavg)" \
  --arg before "$before_ref" --arg before_commit "$(describe "$before_tree")" \
  --arg after "$after_ref" --arg after_commit "$(describe "$after_tree")" \
  --argjson rounds "$rounds" --argjson iperf "$iperf_seconds" --argjson wakes "$wakes" \
  --argjson build_s "$build_seconds" --argjson measure_s "$measure_seconds" '
  def median: sort | if length == 0 then null elif length % 2 == 1 then .[length / 2 | floor] else (.[length / 2 - 1] + .[length / 2]) / 2 end;
  def stats: map(select(. != null)) | {median: median, spread: (if length == 0 then null else max - min end), values: .};
  . as $runs
  | [["tunnel_gbit_per_s", true], ["wake_ms", false], ["apply_1k_ms", false], ["reapply_1k_ms", false], ["apply_10k_ms", false], ["reapply_10k_ms", false]]
  | map(.[0] as $m | .[1] as $higher
      | ([$runs[] | select(.build == "before") | .[$m]] | stats) as $b
      | ([$runs[] | select(.build == "after") | .[$m]] | stats) as $a
      | {key: $m, value: {higher_is_better: $higher, before: $b, after: $a,
          no_regression: (if $b.median == null or $a.median == null then null
                          elif $higher then $a.median >= $b.median - $b.spread
                          else $a.median <= $b.median + $b.spread end)}})
  | from_entries as $summary
  | {date: $date, kernel: $kernel, cpus: ($cpus | tonumber), load_average_at_end: $load,
     before: {ref: $before, commit: $before_commit}, after: {ref: $after, commit: $after_commit},
     rounds: $rounds, iperf_seconds: $iperf, wakes_per_round: $wakes, build_seconds: $build_s, measure_seconds: $measure_s,
     first_packets_lost: ([$runs[] | .wake_lost // 0] | add),
     runs: $runs, summary: $summary}' "$work/runs.jsonl" >"$out"
echo "wrote $out" >&2

table="$(jq -r '
  def r: if . == null then "-" else (. * 100 | round / 100 | tostring) end;
  "Run " + .date + " (kernel " + .kernel + ", " + (.cpus | tostring) + " CPUs, load average at the end " + .load_average_at_end
  + ", " + (.rounds | tostring) + " interleaved rounds, iperf3 -t " + (.iperf_seconds | tostring) + ", " + (.wakes_per_round | tostring)
  + " wakes per round; first packets lost: " + (.first_packets_lost | tostring) + "):\n"
  + "before `" + .before.ref + "` = " + .before.commit + "; after `" + .after.ref + "` = " + .after.commit + "\n\n"
  + "| measure | before median | before spread | after median | after spread | no regression |\n|---|---:|---:|---:|---:|---|\n"
  + ([.summary | to_entries[] | "| " + .key + " | " + (.value.before.median | r) + " | " + (.value.before.spread | r) + " | "
      + (.value.after.median | r) + " | " + (.value.after.spread | r) + " | "
      + (if .value.no_regression == null then "-" elif .value.no_regression then "yes" else "**no**" end) + " |"] | join("\n"))
  + "\n\nPer round (before / after): "
  + ([.runs | group_by(.round)[] | "round " + (.[0].round | tostring) + ": "
      + (map(.build + " " + (.tunnel_gbit_per_s | r) + " Gbit/s, wake " + (.wake_ms | r) + " ms, apply 1k/10k " + (.apply_1k_ms | r) + "/" + (.apply_10k_ms | r)
      + " ms, re-apply " + (.reapply_1k_ms | r) + "/" + (.reapply_10k_ms | r) + " ms") | join("; "))] | join(". "))' "$out")"

echo
echo "$table"
echo
echo "build ${build_seconds}s, measurements ${measure_seconds}s" >&2
readme="$repo/bench/README.md"
if [[ -f "$readme" ]] && grep -q '<!-- engine-compare -->' "$readme"; then
  awk -v table="$table" 'BEGIN{skip=0} /<!-- engine-compare -->/{print; print table; skip=1; next} /<!-- \/engine-compare -->/{skip=0} !skip{print}' "$readme" >"$readme.tmp" && mv "$readme.tmp" "$readme"
fi
