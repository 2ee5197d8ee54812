using System.Text.RegularExpressions;
using Xunit.Abstractions;

namespace Modular.E2E.Tests;

/// <summary>
/// Issue 15's rotation test in namespaces: two Rosenpass agents with the test-only MODULAR_ROSENPASS_REKEY_SECONDS=8
/// (upstream rotates every 120 s) replace their WireGuard PSK in place several times while a ping stream (5 per second)
/// runs through the tunnel, and no ping is lost.
/// </summary>
public sealed partial class RosenpassRotationTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(180);

    /// <summary>300 pings 0.2 s apart: a minute, room for about seven 8-second rotations.</summary>
    private const int Pings = 300;

    [SkippableFact]
    public void Psk_rotates_in_place_while_a_ping_stream_runs_without_loss()
    {
        MeshRig.RequirePrerequisites();
        using var rig = new MeshRig(output, "rr");
        rig.StartServer();
        var key = rig.CreateSetupKey();
        var fastRekey = new Dictionary<string, string> { ["MODULAR_ROSENPASS_REKEY_SECONDS"] = "8" };
        foreach (var name in new[] { "rr1", "rr2" })
        {
            rig.AddAgent(name).WriteConfig(key, "[features]\nlazy_connections = false\n[rosenpass]\nenabled = true");
            rig[name].Start(fastRekey);
        }

        var a = rig["rr1"];
        var b = rig["rr2"];
        string Diagnostics() => a.StatusText() + "\n" + b.StatusText();
        rig.WaitUntil(
            () => a.IsConnected("rr2") && b.IsConnected("rr1")
                  && a.Peer("rr2") is { } p && p.GetProperty("quantum_resistant").GetBoolean()
                  && RosenpassMatrixTests.PresharedKey(a, b) is { } k && k != "(none)" && k == RosenpassMatrixTests.PresharedKey(b, a),
            Patience,
            "rr1 and rr2 on one post-quantum PSK",
            Diagnostics);

        // The PSK rr1's interface holds for rr2 is read (never printed) while the pings run; each new value is a rotation.
        var seen = new List<string>();
        using (var ping = a.Namespace.Start($"ping -c {Pings} -i 0.2 -W 2 {b.OverlayIp}"))
        {
            while (!ping.Process.HasExited)
            {
                if (RosenpassMatrixTests.PresharedKey(a, b) is { } current && current != "(none)" && (seen.Count == 0 || seen[^1] != current))
                {
                    seen.Add(current);
                }

                Thread.Sleep(250); // a poll interval, not a wait for something not to happen
            }

            ping.Process.WaitForExit(); // without a timeout it also waits for the redirected output's end (the summary)
            var summary = PingSummary().Match(ping.Output);
            Assert.True(summary.Success, "ping printed no summary: " + ping.Output);
            var sent = int.Parse(summary.Groups["sent"].Value, System.Globalization.CultureInfo.InvariantCulture);
            var received = int.Parse(summary.Groups["received"].Value, System.Globalization.CultureInfo.InvariantCulture);
            output.WriteLine($"rotation: {seen.Count - 1} PSK changes seen during {sent} pings, {received} answered");
            Assert.Equal(Pings, sent);
            Assert.Equal(sent, received);
        }

        Assert.True(seen.Count - 1 >= 3, $"only {seen.Count - 1} PSK changes while the pings ran");
        Assert.Equal(seen.Count, seen.Distinct(StringComparer.Ordinal).Count()); // a rotated key is never an earlier one

        // Both ends settle on the same (latest) key and the tunnel still carries traffic.
        rig.WaitUntil(() => RosenpassMatrixTests.PresharedKey(a, b) is { } x && x == RosenpassMatrixTests.PresharedKey(b, a), Patience, "rr1 and rr2 on one PSK after rotating", Diagnostics);
        Assert.True(a.Ping(b.OverlayIp!), "rr1 -> rr2 after the rotations");
    }

    [GeneratedRegex(@"(?<sent>\d+) packets transmitted, (?<received>\d+) (packets )?received")]
    private static partial Regex PingSummary();
}
