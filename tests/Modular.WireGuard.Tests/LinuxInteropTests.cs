using System.Net;
using Microsoft.Extensions.Logging.Abstractions;
using Modular.Abstractions.WireGuard;
using Modular.Testing;
using Modular.WireGuard.Interface;
using Modular.WireGuard.Kernel;
using Xunit.Abstractions;

namespace Modular.WireGuard.Tests;

/// <summary>
/// modular-wg and the wireguard-go driver against the reference wireguard-go, each side in its
/// own namespace joined by a veth (underlay 198.18.x, overlay 100.64.x), configured with the
/// real `wg` tool through the UAPI sockets.
/// </summary>
public sealed class LinuxInteropTests(ITestOutputHelper output) : IDisposable
{
    private static readonly Dictionary<string, string> WireGuardGoEnvironment = new()
    {
        [WireGuardGoProcess.PreferUserspaceVariable] = "1",
        ["LOG_LEVEL"] = "verbose",
    };

    private static int _subnet = Environment.ProcessId % 200;

    private readonly List<IDisposable> _cleanup = [];
    private readonly List<string> _tempFiles = [];

    private static void RequireTools()
    {
        Prerequisites.RequireRoot();
        Prerequisites.RequireTool("wg");
        Prerequisites.RequireTool("wireguard-go");
    }

    /// <summary>The modular-wg apphost built next to this test assembly's configuration.</summary>
    private static string ModularWgPath()
    {
        var path = BuiltBinaries.Wg;
        Assert.True(File.Exists(path), $"modular-wg not built at {path}");
        return path;
    }

    private sealed record Side(NetworkNamespace Ns, string Iface, string PrivateKey, string PublicKey, string Underlay, string Overlay, Shell.BackgroundProcess Process);

    private (NetworkNamespace A, NetworkNamespace B, int Subnet) Namespaces()
    {
        var subnet = Interlocked.Increment(ref _subnet) % 250;
        var a = NetworkNamespace.Create("ia");
        _cleanup.Add(a);
        var b = NetworkNamespace.Create("ib");
        _cleanup.Add(b);
        a.Link(b, $"198.18.{subnet}.1/24", $"198.18.{subnet}.2/24");
        return (a, b, subnet);
    }

    private Side StartSide(NetworkNamespace ns, string executable, string iface, int subnet, int host, IDictionary<string, string>? environment = null, string? underlay = null)
    {
        var process = ns.Start($"{executable} -f {iface}", environment ?? WireGuardGoEnvironment);
        _cleanup.Add(process);
        var socket = $"/var/run/wireguard/{iface}.sock";

        // A process killed at the end of the test cannot remove its socket: the test does.
        _tempFiles.Add(socket);
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(20);
        while (!(File.Exists(socket) && ns.TryExec($"ip link show {iface}").ExitCode == 0))
        {
            Assert.True(DateTime.UtcNow < deadline && !process.Process.HasExited, $"{executable} did not create {iface}: {process.Output}");
            Thread.Sleep(50);
        }

        var privateKey = Shell.Run("wg", "genkey").Trim();
        var publicKey = PublicKeyOf(privateKey);
        var keyFile = Path.Combine(Path.GetTempPath(), $"mdl-key-{Guid.NewGuid():N}");
        File.WriteAllText(keyFile, string.Empty);
        Shell.Run("chmod", $"600 {keyFile}");
        File.WriteAllText(keyFile, privateKey + "\n");
        _tempFiles.Add(keyFile);
        ns.Exec($"wg set {iface} private-key {keyFile} listen-port 51820");
        ns.Exec($"ip addr add 100.64.{subnet}.{host}/24 dev {iface}");
        ns.Exec($"ip link set {iface} mtu 1420 up");
        return new Side(ns, iface, privateKey, publicKey, underlay ?? $"198.18.{subnet}.{host}", $"100.64.{subnet}.{host}", process);
    }

    private static string PublicKeyOf(string privateKey) => WgKeys.PublicKeyOf(WgKey.Parse(privateKey)).ToBase64();

    private static void AddPeer(Side self, Side peer)
        => self.Ns.Exec($"wg set {self.Iface} peer {peer.PublicKey} allowed-ips {peer.Overlay}/32 endpoint {UnderlayEndpoint(peer)}");

    /// <summary>The peer's underlay address and port as `wg` writes an endpoint (IPv6 in brackets).</summary>
    private static string UnderlayEndpoint(Side side) => IPAddress.Parse(side.Underlay).AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6 ? $"[{side.Underlay}]:51820" : $"{side.Underlay}:51820";

    private static void RemovePeer(Side self, Side peer) => self.Ns.Exec($"wg set {self.Iface} peer {peer.PublicKey} remove");

    private static void Ping(Side from, Side to)
    {
        var result = from.Ns.TryExec($"ping -c 3 -i 0.2 -W 3 {to.Overlay}", TimeSpan.FromSeconds(30));
        Assert.True(result.ExitCode == 0, $"ping {from.Iface} -> {to.Iface} failed: {result.Output}{result.Error}\n--- {from.Iface}:\n{from.Process.Output}\n--- {to.Iface}:\n{to.Process.Output}");
    }

    /// <summary>Fields of `wg show dump` for the one peer: public key, psk, endpoint, allowed, handshake, rx, tx, keepalive.</summary>
    private static string[] PeerDump(Side side)
    {
        var lines = side.Ns.Exec($"wg show {side.Iface} dump").Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(2, lines.Length);
        return lines[1].Split('\t');
    }

    [SkippableFact]
    public void ModularWgInteroperatesWithWireGuardGo()
    {
        RequireTools();
        var (nsA, nsB, subnet) = Namespaces();
        var tag = Environment.ProcessId % 10000;
        var modular = StartSide(nsA, ModularWgPath(), $"mwa{tag}s{subnet}", subnet, 1);
        var reference = StartSide(nsB, "wireguard-go", $"mwb{tag}s{subnet}", subnet, 2);
        AddPeer(modular, reference);
        AddPeer(reference, modular);

        // Handshake initiated by modular-wg.
        Ping(modular, reference);
        var dump = PeerDump(modular);
        Assert.Equal(reference.PublicKey, dump[0]);
        Assert.Equal($"{reference.Underlay}:51820", dump[2]);
        Assert.Equal($"{reference.Overlay}/32", dump[3]);
        Assert.True(long.Parse(dump[4]) > 0, "latest handshake recorded");
        Assert.True(long.Parse(dump[5]) > 0 && long.Parse(dump[6]) > 0, "transfer counters move");

        // Fresh sessions on both sides, then the handshake is initiated by wireguard-go.
        RemovePeer(modular, reference);
        RemovePeer(reference, modular);
        AddPeer(modular, reference);
        AddPeer(reference, modular);
        Assert.Equal("0", PeerDump(modular)[4]);
        Ping(reference, modular);
        Assert.True(long.Parse(PeerDump(modular)[4]) > 0, "responder side records the handshake");

        // Rekey: modular-wg forgets its session while wireguard-go keeps the old one; traffic needs a new handshake.
        RemovePeer(modular, reference);
        AddPeer(modular, reference);
        Ping(modular, reference);
        Ping(reference, modular);
        Assert.True(long.Parse(PeerDump(modular)[4]) > 0);

        var show = modular.Ns.Exec($"wg show {modular.Iface}");
        Assert.Contains("latest handshake:", show);
        Assert.Contains("transfer:", show);

        // No descriptor leaks from UAPI connections or peer churn (read from modular-wg's own /proc).
        var pid = modular.Process.Process.Id;
        var before = Directory.GetFiles($"/proc/{pid}/fd").Length;
        for (var i = 0; i < 20; i++)
        {
            RemovePeer(modular, reference);
            AddPeer(modular, reference);
            modular.Ns.Exec($"wg show {modular.Iface} dump");
        }

        Ping(modular, reference);
        var after = Directory.GetFiles($"/proc/{pid}/fd").Length;
        Assert.True(after <= before + 2, $"fds {before} -> {after}");

        // Deleting the link stops modular-wg and removes its socket, as with wireguard-go.
        modular.Ns.Exec($"ip link del {modular.Iface}");
        Assert.True(modular.Process.Process.WaitForExit(10_000), "modular-wg exits when its interface is deleted");
        Assert.False(File.Exists($"/var/run/wireguard/{modular.Iface}.sock"));
    }

    [SkippableFact]
    public void ModularWgDaemonizesLikeWireGuardGo()
    {
        RequireTools();
        var (nsA, _, subnet) = Namespaces();
        var iface = $"mwd{Environment.ProcessId % 10000}s{subnet}";

        var result = nsA.TryExec($"{ModularWgPath()} {iface}", TimeSpan.FromSeconds(30));

        Assert.True(result.ExitCode == 0, result.Error);
        Assert.Equal(0, nsA.TryExec($"ip link show {iface}").ExitCode);
        Assert.Contains("listening port", nsA.Exec($"wg show {iface}"));
        var second = nsA.TryExec($"{ModularWgPath()} -f {iface}", TimeSpan.FromSeconds(30));
        Assert.Equal(1, second.ExitCode);
        Assert.Contains("already served", second.Error);
        nsA.Exec($"ip link del {iface}");
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        while (File.Exists($"/var/run/wireguard/{iface}.sock") && DateTime.UtcNow < deadline)
        {
            Thread.Sleep(100);
        }

        Assert.False(File.Exists($"/var/run/wireguard/{iface}.sock"), "the background modular-wg exits with its interface");
    }

    [SkippableFact]
    public void ModularWgStopsCleanlyOnSigterm()
    {
        RequireTools();
        var (nsA, _, subnet) = Namespaces();
        var side = StartSide(nsA, ModularWgPath(), $"mws{Environment.ProcessId % 10000}s{subnet}", subnet, 1);

        Shell.Run("kill", $"-TERM {side.Process.Process.Id}");

        Assert.True(side.Process.Process.WaitForExit(10_000), "modular-wg exits on SIGTERM");
        Assert.Equal(0, side.Process.Process.ExitCode);
        Assert.NotEqual(0, nsA.TryExec($"ip link show {side.Iface}").ExitCode);
        Assert.False(File.Exists($"/var/run/wireguard/{side.Iface}.sock"));
    }

    [SkippableFact]
    public void WgQuickBringsModularWgUpAndDown()
    {
        RequireTools();
        Prerequisites.RequireTool("wg-quick");
        var (nsA, nsB, subnet) = Namespaces();
        var tag = Environment.ProcessId % 10000;
        var reference = StartSide(nsB, "wireguard-go", $"wqb{tag}s{subnet}", subnet, 2);
        var iface = $"wqa{tag}s{subnet}";
        var privateKey = Shell.Run("wg", "genkey").Trim();
        var directory = Path.Combine(Path.GetTempPath(), $"mdl-wgquick-{Guid.NewGuid():N}");
        Directory.CreateDirectory(directory);
        _tempFiles.Add(Path.Combine(directory, $"{iface}.conf"));
        var config = Path.Combine(directory, $"{iface}.conf");
        File.WriteAllText(config, string.Empty);
        Shell.Run("chmod", $"600 {config}");
        File.WriteAllText(config, $"""
            [Interface]
            PrivateKey = {privateKey}
            Address = 100.64.{subnet}.1/24
            ListenPort = 51820

            [Peer]
            PublicKey = {reference.PublicKey}
            AllowedIPs = {reference.Overlay}/32
            Endpoint = {reference.Underlay}:51820
            """);
        reference.Ns.Exec($"wg set {reference.Iface} peer {PublicKeyOf(privateKey)} allowed-ips 100.64.{subnet}.1/32");
        var environment = new Dictionary<string, string> { ["WG_QUICK_USERSPACE_IMPLEMENTATION"] = ModularWgPath() };

        var up = Shell.TryRun("ip", $"netns exec {nsA.Name} wg-quick up {config}", TimeSpan.FromSeconds(60), environment);
        try
        {
            Assert.True(up.ExitCode == 0, up.Error + up.Output);
            Assert.Contains("modular-wg", up.Error + up.Output);
            var ping = nsA.TryExec($"ping -c 3 -i 0.2 -W 3 {reference.Overlay}", TimeSpan.FromSeconds(30));
            Assert.True(ping.ExitCode == 0, ping.Output + reference.Process.Output);
        }
        finally
        {
            var down = Shell.TryRun("ip", $"netns exec {nsA.Name} wg-quick down {config}", TimeSpan.FromSeconds(60), environment);
            Assert.True(down.ExitCode == 0, down.Error);
            Directory.Delete(directory, recursive: true);
        }

        Assert.NotEqual(0, nsA.TryExec($"ip link show {iface}").ExitCode);
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        while (File.Exists($"/var/run/wireguard/{iface}.sock") && DateTime.UtcNow < deadline)
        {
            Thread.Sleep(100);
        }

        Assert.False(File.Exists($"/var/run/wireguard/{iface}.sock"), "modular-wg exits after wg-quick down");
    }

    [SkippableFact]
    public async Task KernelIfaceDrivesAWireGuardGoProcess()
    {
        RequireTools();
        var (nsA, nsB, subnet) = Namespaces();
        var tag = Environment.ProcessId % 10000;
        var reference = StartSide(nsB, "wireguard-go", $"kgb{tag}s{subnet}", subnet, 2);
        var options = new WgIfaceOptions($"kga{tag}s{subnet}", WgKeys.GeneratePrivateKey(), IPAddress.Parse($"100.64.{subnet}.1"), 24, Mtu: 1420);
        await using var iface = new KernelWgIface(options, NullLoggerFactory.Instance, useKernelModule: false) { NetworkNamespace = nsA.Name };

        await iface.CreateAsync(CancellationToken.None);
        await iface.UpAsync(CancellationToken.None);
        var referenceKey = WgKey.Parse(reference.PublicKey);
        await iface.SetPeerAsync(new WgPeerConfig(referenceKey, [IPNetwork.Parse($"{reference.Overlay}/32")], IPEndPoint.Parse($"{reference.Underlay}:51820")), CancellationToken.None);
        reference.Ns.Exec($"wg set {reference.Iface} peer {iface.PublicKey.ToBase64()} allowed-ips 100.64.{subnet}.1/32");

        var ping = nsA.TryExec($"ping -c 3 -i 0.2 -W 3 {reference.Overlay}", TimeSpan.FromSeconds(30));
        var stats = await iface.GetStatsAsync(CancellationToken.None);

        Assert.True(ping.ExitCode == 0, ping.Output + nsA.TryExec("wg show all").Output + nsB.TryExec("wg show all").Output + nsA.TryExec("ip addr").Output + reference.Process.Output);
        Assert.Equal(WgInterfaceMode.Kernel, iface.Mode);
        Assert.Null(iface.BindHook);
        var peer = Assert.Single(stats);
        Assert.Equal(referenceKey, peer.Key);
        Assert.NotNull(peer.Value.LastHandshake);
        Assert.True(peer.Value.RxBytes > 0 && peer.Value.TxBytes > 0);
        Assert.Equal(IPEndPoint.Parse($"{reference.Underlay}:51820"), peer.Value.Endpoint);

        await iface.UpdateEndpointAsync(referenceKey, IPEndPoint.Parse($"{reference.Underlay}:51821"), CancellationToken.None);
        Assert.Equal(51821, (await iface.GetStatsAsync(CancellationToken.None))[referenceKey].Endpoint!.Port);
        await iface.RemovePeerAsync(referenceKey, CancellationToken.None);
        Assert.Empty(await iface.GetStatsAsync(CancellationToken.None));

        // The mark an exit node's policy routing relies on, set over UAPI and read back by the real `wg`.
        await iface.SetFwmarkAsync(51820, CancellationToken.None);
        Assert.Equal("0xca6c", nsA.Exec($"wg show {options.Name} fwmark").Trim());
        await iface.SetFwmarkAsync(0, CancellationToken.None);
        Assert.Equal("off", nsA.Exec($"wg show {options.Name} fwmark").Trim());

        var pid = iface.ProcessId!.Value;
        await iface.CloseAsync(CancellationToken.None);

        Assert.NotEqual(0, nsA.TryExec($"ip link show {options.Name}").ExitCode);
        Assert.False(Directory.Exists($"/proc/{pid}") && !File.ReadAllText($"/proc/{pid}/stat").Contains(" Z ", StringComparison.Ordinal), "wireguard-go stopped");
        Assert.False(File.Exists($"/var/run/wireguard/{options.Name}.sock"));
    }

    [SkippableFact]
    public async Task KernelModulePathConfiguresARealWireGuardLink()
    {
        Prerequisites.RequireRoot();
        Prerequisites.SkipAlwaysUnless(KernelWgIface.KernelModuleAvailable(), "skipped: no WireGuard kernel module");
        var (nsA, _, subnet) = Namespaces();
        var options = new WgIfaceOptions($"kmod{subnet}", WgKeys.GeneratePrivateKey(), IPAddress.Parse($"100.64.{subnet}.1"), 24);
        await using var iface = new KernelWgIface(options, NullLoggerFactory.Instance, useKernelModule: true) { NetworkNamespace = nsA.Name };

        await iface.CreateAsync(CancellationToken.None);
        var peerKey = WgKeys.PublicKeyOf(WgKeys.GeneratePrivateKey());
        await iface.SetPeerAsync(new WgPeerConfig(peerKey, [IPNetwork.Parse("100.64.0.9/32")]), CancellationToken.None);

        Assert.Contains(peerKey.ToBase64(), nsA.Exec($"wg show {options.Name} peers"));
    }

    /// <summary>
    /// Rekey driven by the protocol timers themselves: modular-wg runs its clock 20 times faster
    /// (MODULAR_WG_TEST_TIME_SCALE, test only), so REKEY_AFTER_TIME (120 s) passes every ~6 s real
    /// while a ping keeps the tunnel busy. wireguard-go cannot be sped up, so only the rekeys that
    /// modular-wg initiates are exercised this way.
    /// </summary>
    [SkippableFact]
    public void ModularWgRekeysOnItsTimersWithWireGuardGo()
    {
        RequireTools();
        var (nsA, nsB, subnet) = Namespaces();
        var tag = Environment.ProcessId % 10000;
        var scaled = new Dictionary<string, string>(WireGuardGoEnvironment) { [TimeScaleVariable] = "20" };
        var modular = StartSide(nsA, ModularWgPath(), $"mra{tag}s{subnet}", subnet, 1, scaled);
        var reference = StartSide(nsB, "wireguard-go", $"mrb{tag}s{subnet}", subnet, 2);
        AddPeer(modular, reference);
        AddPeer(reference, modular);
        Ping(modular, reference);
        Assert.Contains("TEST-ONLY clock running 20x faster", modular.Process.Output);

        // ~22 s of traffic: over three REKEY_AFTER_TIME periods on modular-wg's clock, bounded in count and time.
        var referenceHandshakes = new HashSet<long>();
        var modularHandshakes = new HashSet<long>();
        using (var ping = nsA.Start($"ping -c 110 -i 0.2 -W 1 {reference.Overlay}"))
        {
            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
            while (!ping.Process.HasExited && DateTime.UtcNow < deadline)
            {
                referenceHandshakes.Add(long.Parse(PeerDump(reference)[4], System.Globalization.CultureInfo.InvariantCulture));
                modularHandshakes.Add(long.Parse(PeerDump(modular)[4], System.Globalization.CultureInfo.InvariantCulture));
                Thread.Sleep(250);
            }

            Assert.True(ping.Process.WaitForExit(10_000), "ping finished");
            ping.Process.WaitForExit(); // drains the redirected output
            var (sent, received) = PingCounts(ping.Output);
            var logs = $"\n--- modular-wg:\n{modular.Process.Output}\n--- wireguard-go:\n{reference.Process.Output}";
            Assert.True(sent >= 100 && received >= sent * 9 / 10, $"ping {received}/{sent}: {ping.Output}{logs}");

            // The initial handshake plus at least two timer-driven ones, seen from both sides.
            referenceHandshakes.Remove(0);
            modularHandshakes.Remove(0);
            Assert.True(referenceHandshakes.Count >= 3, $"wireguard-go saw handshakes at [{string.Join(", ", referenceHandshakes)}]{logs}");
            Assert.True(modularHandshakes.Count >= 3, $"modular-wg saw handshakes at [{string.Join(", ", modularHandshakes)}]{logs}");

            // Each rekey carried a TAI64N timestamp later than the last (modular-wg's run ahead of real time): none was refused.
            // (wireguard-go's verbose log is captured: it shows the initiations it accepted and names each refused one.)
            // The one refusal allowed is wireguard-go's flood guard (a second initiation within 20 ms of the last): at 20x,
            // modular-wg retries every 250 ms of real time, and on a loaded machine two of them can wait in wireguard-go's
            // socket and be read back to back. Any other refusal (a replayed timestamp, a bad message) fails the test.
            Assert.Contains("Received handshake initiation", reference.Process.Output, StringComparison.Ordinal);
            var refused = LinesWith(reference.Process.Output, "Received invalid initiation");
            var floods = LinesWith(reference.Process.Output, "ConsumeMessageInitiation: handshake flood");
            Assert.True(refused.Count == floods.Count, $"wireguard-go refused initiations other than floods:\n{string.Join('\n', refused.Concat(floods))}{logs}");
            Assert.DoesNotContain("handshake replay", reference.Process.Output, StringComparison.Ordinal);
            output.WriteLine($"ping {received}/{sent}; handshakes seen by wireguard-go: {referenceHandshakes.Count}, by modular-wg: {modularHandshakes.Count}");
        }

        // Both ends still hold a working session, whichever side sends first.
        Ping(reference, modular);
        Ping(modular, reference);
    }

    /// <summary>`wg set fwmark` through modular-wg's UAPI socket marks its UDP socket (seen by `ss`), also after a rebind.</summary>
    [SkippableFact]
    public void ModularWgAppliesTheFwmarkToItsSocket()
    {
        RequireTools();
        Prerequisites.RequireTool("ss");
        var (nsA, nsB, subnet) = Namespaces();
        var tag = Environment.ProcessId % 10000;
        var modular = StartSide(nsA, ModularWgPath(), $"mfa{tag}s{subnet}", subnet, 1);
        var reference = StartSide(nsB, "wireguard-go", $"mfb{tag}s{subnet}", subnet, 2);
        AddPeer(modular, reference);
        AddPeer(reference, modular);

        Assert.DoesNotContain("fwmark:", SocketDetails(nsA, 51820));
        modular.Ns.Exec($"wg set {modular.Iface} fwmark 0x1234");

        Assert.Equal("0x1234", nsA.Exec($"wg show {modular.Iface} fwmark").Trim());
        Assert.Contains("fwmark:0x1234", SocketDetails(nsA, 51820));
        Ping(modular, reference);

        // A new socket (listen-port change) gets the mark too; 0 clears it.
        modular.Ns.Exec($"wg set {modular.Iface} listen-port 51821");
        Assert.Contains("fwmark:0x1234", SocketDetails(nsA, 51821));
        modular.Ns.Exec($"wg set {modular.Iface} fwmark 0");
        Assert.DoesNotContain("fwmark:", SocketDetails(nsA, 51821));
        Assert.Equal("off", nsA.Exec($"wg show {modular.Iface} fwmark").Trim());
    }

    /// <summary>The IPv4 overlay over an IPv6 underlay (unique local addresses on the veth inside the namespaces).</summary>
    [SkippableFact]
    public void ModularWgInteroperatesOverAnIPv6Underlay()
    {
        RequireTools();
        var subnet = Interlocked.Increment(ref _subnet) % 250;
        var nsA = NetworkNamespace.Create("ia");
        _cleanup.Add(nsA);
        var nsB = NetworkNamespace.Create("ib");
        _cleanup.Add(nsB);
        var underlayA = $"fd00:198:18:{subnet:x}::1";
        var underlayB = $"fd00:198:18:{subnet:x}::2";

        // nodad: the addresses are usable at once instead of after duplicate address detection.
        nsA.Link(nsB, $"{underlayA}/64 nodad", $"{underlayB}/64 nodad");
        var tag = Environment.ProcessId % 10000;
        var modular = StartSide(nsA, ModularWgPath(), $"m6a{tag}s{subnet}", subnet, 1, underlay: underlayA);
        var reference = StartSide(nsB, "wireguard-go", $"m6b{tag}s{subnet}", subnet, 2, underlay: underlayB);
        AddPeer(modular, reference);
        AddPeer(reference, modular);

        Ping(modular, reference);
        Ping(reference, modular);

        var dump = PeerDump(modular);
        Assert.Equal($"[{underlayB}]:51820", dump[2]);
        Assert.True(long.Parse(dump[4], System.Globalization.CultureInfo.InvariantCulture) > 0, "latest handshake recorded");
        Assert.Equal($"[{underlayA}]:51820", PeerDump(reference)[2]);
    }

    /// <summary>A malformed test clock scale is refused up front, before any interface exists.</summary>
    [SkippableTheory]
    [InlineData("fast")]
    [InlineData("0.5")]
    [InlineData("-20")]
    public void ModularWgRefusesABadTimeScale(string scale)
    {
        RequireTools();
        var (nsA, _, subnet) = Namespaces();
        var iface = $"mts{Environment.ProcessId % 10000}s{subnet}";
        var environment = new Dictionary<string, string> { [TimeScaleVariable] = scale };

        var result = Shell.TryRun("ip", $"netns exec {nsA.Name} {ModularWgPath()} -f {iface}", TimeSpan.FromSeconds(30), environment);

        Assert.Equal(1, result.ExitCode);
        Assert.Contains(TimeScaleVariable, result.Error);
        Assert.NotEqual(0, nsA.TryExec($"ip link show {iface}").ExitCode);
    }

    private const string TimeScaleVariable = "MODULAR_WG_TEST_TIME_SCALE";

    private static List<string> LinesWith(string text, string marker)
        => [.. text.Split('\n').Where(line => line.Contains(marker, StringComparison.Ordinal))];

    /// <summary>`ss -e` details of the UDP sockets bound to <paramref name="port"/> in the namespace.</summary>
    private static string SocketDetails(NetworkNamespace ns, int port) => ns.Exec($"ss -uaneH sport = :{port}");

    /// <summary>Transmitted and received counts from ping's summary line.</summary>
    private static (int Sent, int Received) PingCounts(string output)
    {
        var match = System.Text.RegularExpressions.Regex.Match(output, @"(\d+) packets transmitted, (\d+) (?:packets )?received");
        Assert.True(match.Success, $"no ping summary in: {output}");
        return (int.Parse(match.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture), int.Parse(match.Groups[2].Value, System.Globalization.CultureInfo.InvariantCulture));
    }

    public void Dispose()
    {
        for (var i = _cleanup.Count - 1; i >= 0; i--)
        {
            _cleanup[i].Dispose();
        }

        foreach (var file in _tempFiles)
        {
            if (File.Exists(file))
            {
                File.Delete(file);
            }
        }
    }
}
