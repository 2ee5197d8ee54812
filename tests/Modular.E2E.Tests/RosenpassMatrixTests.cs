using Xunit.Abstractions;

namespace Modular.E2E.Tests;

/// <summary>
/// Issue 15's mode matrix with real agents in namespaces: (on, on) connect with the same post-quantum PSK (read through
/// UAPI) and `status -d` says so; (permissive, off) and (off, off) connect with no PSK (the account has none); (strict,
/// off) never connects.
/// </summary>
public sealed class RosenpassMatrixTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(180);

    // rp1 (strict) and rp2 (permissive) once never connected: the host handed the provider the interface's network
    // (100.64.0.0/10) as its address, so the exchange never listened and the key was never published, and strict rp1
    // refused rp2 as a non-Rosenpass peer. The host now passes the agent's own overlay IP.
    [SkippableFact]
    public void Mode_matrix_on_on_permissive_off_strict_off_off_off()
    {
        MeshRig.RequirePrerequisites();
        using var rig = new MeshRig(output, "rp");
        rig.StartServer();
        var key = rig.CreateSetupKey();
        rig.AddAgent("rp1").WriteConfig(key, "[features]\nlazy_connections = false\n[rosenpass]\nenabled = true\npermissive = false");
        rig.AddAgent("rp2").WriteConfig(key, "[features]\nlazy_connections = false\n[rosenpass]\nenabled = true\npermissive = true");
        rig.AddAgent("rp3").WriteConfig(key, "[features]\nlazy_connections = false\n[rosenpass]\nenabled = false");
        rig.AddAgent("rp4").WriteConfig(key, "[features]\nlazy_connections = false\n[rosenpass]\nenabled = false");
        foreach (var name in new[] { "rp1", "rp2", "rp3", "rp4" })
        {
            rig[name].Start();
        }

        // On failure: both strict/permissive agents' status and their Rosenpass and PSK log lines (never a key: the agent does not log them).
        string Diagnostics() => string.Join("\n", new[] { "rp1", "rp2" }.Select(n => rig[n].StatusText() + "\n" + string.Join("\n",
            rig[n].Log.Split('\n').Where(line => line.Contains("Rosenpass", StringComparison.OrdinalIgnoreCase) || line.Contains("PSK", StringComparison.Ordinal)
                || line.Contains("handshake", StringComparison.OrdinalIgnoreCase)).TakeLast(60))));

        // (on strict, on permissive): both run Rosenpass: first the seed PSK, then the exchange's key, the same on both sides.
        var started = System.Diagnostics.Stopwatch.StartNew();
        rig.WaitUntil(() => rig["rp1"].IsConnected("rp2") && rig["rp2"].IsConnected("rp1"), Patience, "rp1 and rp2 connected", Diagnostics);
        var tunnelUp = started.Elapsed;
        rig.WaitUntil(
            () => rig["rp1"].Peer("rp2") is { } p && p.GetProperty("quantum_resistant").GetBoolean()
                  && rig["rp2"].Peer("rp1") is { } q && q.GetProperty("quantum_resistant").GetBoolean()
                  && PresharedKey(rig["rp1"], rig["rp2"]) is { } a && a == PresharedKey(rig["rp2"], rig["rp1"]),
            Patience,
            "rp1 and rp2 on one post-quantum PSK",
            Diagnostics);
        // The benchmark's "tunnel up to first post-quantum PSK" (bench/README.md): agents started, both keys generated.
        output.WriteLine($"rp1-rp2: tunnel up {tunnelUp.TotalSeconds:F1} s after start, first post-quantum PSK {(started.Elapsed - tunnelUp).TotalSeconds:F1} s later");
        Assert.NotEqual("(none)", PresharedKey(rig["rp1"], rig["rp2"]));
        rig.WaitUntil(() => rig["rp1"].IsConnected("rp2") && rig["rp2"].IsConnected("rp1"), Patience, "rp1 and rp2 still connected", Diagnostics);
        Assert.True(rig["rp1"].Ping(rig["rp2"].OverlayIp!), "rp1 -> rp2 over the post-quantum PSK");
        Assert.Matches(@"Quantum resistance: +yes, since", rig["rp1"].StatusText());
        // A provider that runs with its exchange address: status shows Rosenpass on, nothing said to be missing.
        var features = rig["rp1"].Status()!.Value.GetProperty("features");
        Assert.True(features.GetProperty("rosenpass").GetBoolean(), "rp1's working PSK provider shown as not in effect");
        Assert.False(features.GetProperty("unavailable").TryGetProperty("rosenpass", out _), "rp1's working PSK provider shown as not available");

        // (permissive, off) and (off, off): connected, no PSK (the account has none).
        rig.WaitUntil(() => rig["rp2"].IsConnected("rp3") && rig["rp3"].IsConnected("rp4"), Patience, "rp2-rp3 and rp3-rp4 connected", Diagnostics);
        Assert.True(rig["rp2"].Ping(rig["rp3"].OverlayIp!), "permissive rp2 -> rp3 without Rosenpass");
        Assert.True(rig["rp3"].Ping(rig["rp4"].OverlayIp!), "rp3 -> rp4, both off");
        Assert.Equal("(none)", PresharedKey(rig["rp2"], rig["rp3"]));
        Assert.Equal("(none)", PresharedKey(rig["rp3"], rig["rp4"]));
        Assert.False(rig["rp2"].Peer("rp3")!.Value.GetProperty("quantum_resistant").GetBoolean());

        // (strict, off): rp1 refuses rp3 and says why; no WireGuard handshake between them ever completes.
        Assert.Contains("refused", rig["rp1"].StatusText(), StringComparison.Ordinal);
        Assert.False(rig["rp1"].Ping(rig["rp3"].OverlayIp!, count: 2), "strict rp1 reached rp3");
        Assert.Null(PresharedKey(rig["rp1"], rig["rp3"])); // not configured at all
        Assert.False(rig["rp3"].IsConnected("rp1"), "rp3 connected to the strict rp1");
    }

    /// <summary>The PSK <paramref name="agent"/>'s interface holds for <paramref name="peer"/> (`wg show … preshared-keys`; never logged), "(none)", or null when the peer is not configured.</summary>
    internal static string? PresharedKey(MeshRig.Agent agent, MeshRig.Agent peer)
    {
        var peerKey = peer.Status()?.GetProperty("public_key").GetString();
        var show = agent.Namespace.TryExec($"wg show {agent.Interface} preshared-keys");
        if (peerKey is null || show.ExitCode != 0)
        {
            return null;
        }

        return show.Output.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(line => line.Split('\t'))
            .Where(fields => fields.Length == 2 && fields[0] == peerKey)
            .Select(fields => fields[1])
            .FirstOrDefault();
    }
}
