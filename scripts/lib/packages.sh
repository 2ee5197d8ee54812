# shellcheck shell=bash
# The Debian packages Modular drives, and the one way to install them. Sourced by scripts/setup
# (everything) and scripts/demo (only what the demo drives), so the list and the install step
# live in one place. Whether a package is there is asked of dpkg, not of PATH: a run that hides a
# tool from PATH (the demo's own test does) still counts it installed and does not reinstall it.

# What the tests and the demo drive for real:
#   wireguard-go, wireguard-tools  reference WireGuard peers (`wg`, the Go userspace device)
#   iperf3                          tunnel throughput benchmarks; the demo's TCP listeners
#   nftables, iproute2              namespaces, veth, NAT and packet loss in the test rig
#   iputils-ping, dnsutils          ping across the tunnel; DNS checks
#   jq                              the demo reads `status --json` with it
#   redis-server                    the server's flow cache and pub/sub tests
#   nfdump                          nfcapd/nfdump read the agent's IPFIX export (its service unit runs nothing)
#   conntrack                       inspecting kernel-mode connection tracking (flow logging)
#   clang, llvm, bpftool, libbpf-dev  building and loading the eBPF proxy program
#   clang, zlib1g-dev               linking the native-AOT `modular` (scripts/publish)
#   chromium                        the local UI's browser test (headless, through Playwright; no browser download)
#   systemd                         `systemd-analyze verify` checks the units (no running systemd needed);
#                                   dpkg-deb (scripts/package-deb) is in dpkg, always there
modular_packages=(
  wireguard-go wireguard-tools iperf3 nftables iproute2 iputils-ping dnsutils jq
  redis-server nfdump conntrack clang llvm bpftool libbpf-dev zlib1g-dev chromium systemd
)

# The part scripts/demo drives (a subset of the above): a first run should not pull in a compiler.
modular_demo_packages=(iproute2 iputils-ping dnsutils iperf3 jq)

# packages_missing PACKAGE...: prints each PACKAGE dpkg does not report installed, one a line.
packages_missing() {
  local package
  for package in "$@"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed'; then
      echo "$package"
    fi
  done
}

# packages_install_line PACKAGE...: the command a user runs to install PACKAGE... by hand.
packages_install_line() {
  echo "sudo apt-get install -y --no-install-recommends $*"
}

# packages_install WHO PACKAGE...: installs PACKAGE... with apt-get (needs root); messages start
# with WHO. Returns non-zero, having said why, when it could not.
packages_install() {
  local who="$1"
  shift
  if [[ $(id -u) -ne 0 ]]; then
    echo "$who: these packages are missing and installing them needs root: $*" >&2
    return 1
  fi
  echo "$who: installing $*"
  if ! DEBIAN_FRONTEND=noninteractive apt-get update -q || ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"; then
    echo "$who: apt-get could not install: $*" >&2
    return 1
  fi
}
