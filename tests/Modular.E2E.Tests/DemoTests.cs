using System.Text.RegularExpressions;
using Modular.Testing;
using Xunit.Abstractions;

namespace Modular.E2E.Tests;

/// <summary>
/// scripts/demo, the README's first command, run as a newcomer runs it (as root, from the repository), so a demo
/// that breaks fails the build: every check passes; and with one tool hidden, it fails and names the steps.
/// </summary>
public sealed partial class DemoTests(ITestOutputHelper output)
{
    /// <summary>
    /// How many checks a full run makes (steps 1-19). A check that stops running (skipped, deleted, or a step
    /// cut short) changes the count and fails the test; a new check means updating this number.
    /// </summary>
    private const int ExpectedChecks = 37; // 35 + a3's TCP 80 probe flows (issue 14) + a2's quantum resistance (issue 15)

    /// <summary>A run takes about a minute on an idle machine; a loaded one (2 shared cores) is slower.</summary>
    private static readonly TimeSpan RunTimeout = TimeSpan.FromMinutes(6);

    private static readonly string[] Tools = ["ip", "ping", "dig", "iperf3", "jq", "ss", "timeout"];

    [SkippableFact]
    public void The_demo_passes_every_check_and_exits_0()
    {
        RequirePrerequisites();
        var run = RunDemo(new Dictionary<string, string>());

        Assert.True(run.ExitCode == 0, $"scripts/demo exited {run.ExitCode}:\n{Tail(run.Output)}");
        Assert.DoesNotContain("[FAILED]", run.Output, StringComparison.Ordinal);
        Assert.Equal(ExpectedChecks, OkLine().Count(run.Output));
        Assert.Contains($"demo: all {ExpectedChecks} checks passed", run.Output, StringComparison.Ordinal);
    }

    [SkippableFact]
    public void Without_iperf3_on_PATH_the_demo_fails_and_names_the_steps_whose_tool_is_missing()
    {
        RequirePrerequisites();
        Prerequisites.Require(Prerequisites.FindOnPath("dotnet") is not null, "needs 'dotnet' on PATH");
        var bin = Directory.CreateTempSubdirectory("modular-demo-path-");
        try
        {
            // Everything the system offers except iperf3 (dpkg still lists it installed, so the demo's package
            // step does not try to reinstall it), plus the .NET SDK.
            foreach (var dir in new[] { "/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin" })
            {
                if (!Directory.Exists(dir))
                {
                    continue;
                }

                foreach (var file in Directory.EnumerateFiles(dir))
                {
                    var link = Path.Combine(bin.FullName, Path.GetFileName(file));
                    if (Path.GetFileName(file) != "iperf3" && !File.Exists(link))
                    {
                        File.CreateSymbolicLink(link, file);
                    }
                }
            }

            // The SDK's own folder (/usr/bin/dotnet is a link into it), not the folder of a link to it.
            var dotnet = Prerequisites.FindOnPath("dotnet")!;
            var dotnetDir = Path.GetDirectoryName(File.ResolveLinkTarget(dotnet, returnFinalTarget: true)?.FullName ?? dotnet)!;
            var path = $"{bin.FullName}:{dotnetDir}";
            Assert.False(path.Split(':').Any(dir => File.Exists(Path.Combine(dir, "iperf3"))), $"iperf3 is still on PATH={path}");
            var run = RunDemo(new Dictionary<string, string> { ["PATH"] = path });

            Assert.True(run.ExitCode == 1, $"expected exit code 1, got {run.ExitCode}:\n{Tail(run.Output)}");
            var summary = SummaryLine().Match(run.Output);
            Assert.True(summary.Success, $"no 'demo: N checks failed: ...' line:\n{Tail(run.Output)}");
            Assert.Contains("step 12 (a3 listening on TCP 80 and 22: expected listening, got tool missing (iperf3))", summary.Value, StringComparison.Ordinal);
            Assert.Contains("step 13 (a1 -> a3 TCP 22: expected dropped, got tool missing (iperf3, the listener))", summary.Value, StringComparison.Ordinal);
            Assert.Contains("step 16 (a1 -> a3 TCP 80: expected connected, got tool missing (iperf3, the listener))", summary.Value, StringComparison.Ordinal);
            Assert.Contains("step 17 (a3's flow events: TCP 80 from a1: expected shipped, got tool missing (iperf3, the listener of the TCP probes))", summary.Value, StringComparison.Ordinal);
            Assert.Contains("step 17 (a1's Drop of TCP 80 by policy no-web: expected shipped, got tool missing (iperf3, the listener of step 15's probe))", summary.Value, StringComparison.Ordinal);
            // What does not need iperf3 still ran and passed: the ping, the DNS answer, the ping's flow events, lazy connections.
            Assert.DoesNotContain("step 11", summary.Value, StringComparison.Ordinal);
            Assert.DoesNotContain("step 18", summary.Value, StringComparison.Ordinal);
            Assert.Contains("[ok] a3's flow events: ping from a1: shipped", run.Output, StringComparison.Ordinal);
            Assert.Contains("[ok] the first ping a1 -> a4: answered", run.Output, StringComparison.Ordinal);
        }
        finally
        {
            bin.Delete(recursive: true);
        }
    }

    private static void RequirePrerequisites()
    {
        Prerequisites.RequireRoot();
        foreach (var tool in Tools)
        {
            Prerequisites.RequireTool(tool);
        }

        // Built beforehand (scripts/test builds Release first): a build inside the demo would be slow and race others.
        var agent = BuiltBinaries.Host("Modular.Agent", "modular");
        var server = BuiltBinaries.Server;
        Prerequisites.Require(File.Exists(agent) && File.Exists(server), $"needs the built binaries {agent} and {server}");
    }

    /// <summary>
    /// Runs scripts/demo (bounded by <see cref="RunTimeout"/>) and checks that it left none of its network
    /// namespaces behind. On a timeout it gets SIGTERM first, so its own cleanup runs.
    /// </summary>
    private Shell.Result RunDemo(Dictionary<string, string> environment)
    {
        environment["CONFIGURATION"] = BuiltBinaries.Configuration;
        environment["TERM"] = "dumb";
        using var demo = Shell.Start("bash", Path.Combine(BuiltBinaries.RepoRoot, "scripts", "demo"), environment);
        var tag = $"mdldemo{demo.Process.Id}-";
        var exited = demo.Process.WaitForExit(RunTimeout);
        if (!exited)
        {
            Shell.TryRun("kill", $"-TERM {demo.Process.Id}");
            if (!demo.Process.WaitForExit(TimeSpan.FromSeconds(60)))
            {
                demo.Process.Kill(entireProcessTree: true);
            }
        }

        demo.Process.WaitForExit(); // the output readers finish
        output.WriteLine(demo.Output);
        var left = Shell.TryRun("ip", "netns list").Output.Split('\n').Select(line => line.Split(' ')[0]).Where(ns => ns.StartsWith(tag, StringComparison.Ordinal)).ToList();
        foreach (var ns in left)
        {
            Shell.TryRun("ip", $"netns delete {ns}");
        }

        Assert.True(exited, $"scripts/demo did not finish within {RunTimeout}:\n{Tail(demo.Output)}");
        Assert.True(left.Count == 0, $"scripts/demo left network namespaces behind: {string.Join(", ", left)}");
        return new Shell.Result(demo.Process.ExitCode, demo.Output, "");
    }

    private static string Tail(string text) => string.Join('\n', text.Split('\n').TakeLast(60));

    [GeneratedRegex(@"^   \[ok\] ", RegexOptions.Multiline | RegexOptions.CultureInvariant)]
    private static partial Regex OkLine();

    [GeneratedRegex(@"^demo: \d+ checks? failed: .*$", RegexOptions.Multiline | RegexOptions.CultureInvariant)]
    private static partial Regex SummaryLine();
}
