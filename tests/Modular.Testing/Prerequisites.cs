using System.Diagnostics;
using Xunit;

namespace Modular.Testing;

/// <summary>
/// Decides what a test does when something it needs is missing: locally it is skipped with the
/// reason; under CI (CI=true) it fails, because scripts/test installs every prerequisite and a
/// skip there would hide a broken setup. Use inside a <c>[SkippableFact]</c>.
/// </summary>
public static class Prerequisites
{
    public static bool InCi => string.Equals(Environment.GetEnvironmentVariable("CI"), "true", StringComparison.OrdinalIgnoreCase);

    public static bool IsRoot => Environment.UserName == "root" || geteuid() == 0;

    /// <summary>Needs root (network namespaces, TUN devices, eBPF).</summary>
    public static void RequireRoot() => Require(IsRoot, "needs root");

    /// <summary>Needs an executable on PATH, e.g. "wg", "wireguard-go", "iperf3".</summary>
    public static void RequireTool(string tool) => Require(FindOnPath(tool) is not null, $"needs '{tool}' on PATH");

    /// <summary>Skips (or fails under CI) when <paramref name="condition"/> is false.</summary>
    public static void Require(bool condition, string reason)
    {
        if (condition)
        {
            return;
        }

        if (InCi)
        {
            throw new InvalidOperationException($"Missing prerequisite under CI: {reason}. scripts/test must install it.");
        }

        Skip.If(true, reason);
    }

    /// <summary>Skips even under CI: for what no CI machine here can have (e.g. a WireGuard kernel module).</summary>
    public static void SkipAlwaysUnless(bool condition, string reason) => Skip.If(!condition, reason);

    public static string? FindOnPath(string tool)
    {
        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries))
        {
            var candidate = Path.Combine(dir, tool);
            if (File.Exists(candidate))
            {
                return candidate;
            }
        }

        foreach (var dir in new[] { "/usr/sbin", "/sbin", "/usr/bin", "/bin" })
        {
            var candidate = Path.Combine(dir, tool);
            if (File.Exists(candidate))
            {
                return candidate;
            }
        }

        return null;
    }

    [System.Runtime.InteropServices.DllImport("libc", SetLastError = false)]
    private static extern uint geteuid();
}
