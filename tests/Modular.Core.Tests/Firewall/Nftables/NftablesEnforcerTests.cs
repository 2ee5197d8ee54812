using System.Net;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using Modular.Control.Management;
using Modular.Core.Engine;
using Modular.Core.Firewall.Nftables;
using Modular.Core.Status;
using Modular.WireGuard.Interface;
using static Modular.Core.Tests.Firewall.TestPackets;
using FirewallRule = Modular.Core.Firewall.FirewallRule;
using RuleAction = Modular.Core.Firewall.RuleAction;
using RuleProtocol = Modular.Core.Firewall.RuleProtocol;

namespace Modular.Core.Tests.Firewall.Nftables;

/// <summary>The enforcer's life cycle against in-memory nftables, and how the engine picks a mode.</summary>
public sealed class NftablesEnforcerTests
{
    private readonly FakeNftables _nft = new();
    private readonly FakeConntrack _conntrack = new();
    private readonly FakeTimeProvider _time = new(DateTimeOffset.Parse("2026-03-01T12:00:00Z", System.Globalization.CultureInfo.InvariantCulture));

    private static readonly FirewallRule[] WebAndNoSsh =
    [
        Rule("web", RuleAction.Accept, RuleProtocol.Tcp, "100.64.0.1", "80"),
        Rule("no-ssh", RuleAction.Drop, RuleProtocol.Tcp, "100.64.0.0/10", "22"),
    ];

    private NftablesEnforcer NewEnforcer() => new("mdl0", IPAddress.Parse("100.64.0.2"), null, _nft, NullLogger.Instance, _time, _conntrack);

    [Fact]
    public async Task Each_apply_replaces_the_whole_table_in_one_script()
    {
        await using var enforcer = NewEnforcer();

        Assert.True(await enforcer.ApplyAsync(WebAndNoSsh, CancellationToken.None));
        Assert.True(await enforcer.ApplyAsync([], CancellationToken.None));

        Assert.Equal(2, _nft.Applied.Count);
        Assert.All(_nft.Applied, script => Assert.StartsWith("add table inet modular_mdl0\ndelete table inet modular_mdl0\ntable inet modular_mdl0 {", script, StringComparison.Ordinal));
        Assert.Contains("comment \"web\"", _nft.Applied[0], StringComparison.Ordinal);
        Assert.DoesNotContain("comment \"web\"", _nft.Applied[1], StringComparison.Ordinal);
        Assert.Equal(0, enforcer.Status.Rules);
        Assert.Null(enforcer.Status.Error);
    }

    [Fact]
    public async Task Each_table_marks_connections_with_a_new_generation_so_older_ones_are_checked_again()
    {
        await using var enforcer = NewEnforcer();
        var marks = new List<string>();
        for (var i = 0; i < NftablesRenderer.MaxGeneration + 2; i++)
        {
            // Changed rules each time: unchanged ones are no apply at all (below).
            Assert.True(await enforcer.ApplyAsync(i % 2 == 0 ? WebAndNoSsh : WebAndNoSsh[..1], CancellationToken.None));
            var mark = System.Text.RegularExpressions.Regex.Match(_nft.Applied[^1], "ct mark & 0x7f000000 == (0x[0-9a-f]{8}) accept").Groups[1].Value;
            Assert.Contains($"| {mark} accept comment \"web\"", _nft.Applied[^1], StringComparison.Ordinal);
            marks.Add(mark);
        }

        Assert.All(marks.Zip(marks.Skip(1)), pair => Assert.NotEqual(pair.First, pair.Second));
        Assert.Equal(NftablesRenderer.MaxGeneration, marks.Distinct().Count());
        Assert.DoesNotContain("0x00000000", marks);
    }

    [Fact]
    public async Task Kernel_unchanged_rules_cause_no_nft_transaction_however_often_they_come()
    {
        await using var enforcer = NewEnforcer();
        for (var i = 0; i < 200; i++)
        {
            Assert.True(await enforcer.ApplyAsync(WebAndNoSsh, CancellationToken.None));
        }

        var only = Assert.Single(_nft.Applied);
        Assert.Contains("comment \"web\"", only, StringComparison.Ordinal);
        Assert.Single(_conntrack.Cleared); // one generation, cleared once
        Assert.Equal(2, enforcer.Status.Rules);

        // Changed rules do apply; the same rules again after a refused table do too (the refused one is not in force).
        Assert.True(await enforcer.ApplyAsync(WebAndNoSsh[..1], CancellationToken.None));
        Assert.Equal(2, _nft.Applied.Count);
        _nft.RefuseWith = "Error: busy";
        Assert.False(await enforcer.ApplyAsync(WebAndNoSsh, CancellationToken.None));
        _nft.RefuseWith = null;
        Assert.True(await enforcer.ApplyAsync(WebAndNoSsh[..1], CancellationToken.None));
        Assert.Equal(2, _nft.Applied.Count); // what is in force already
        Assert.Null(enforcer.Status.Error);
        Assert.True(await enforcer.ApplyAsync(WebAndNoSsh, CancellationToken.None));
        Assert.Equal(3, _nft.Applied.Count);

        // A table deleted from outside is written again, even with the same rules.
        await _nft.DeleteTableAsync(NftablesRenderer.Family, enforcer.Table, CancellationToken.None);
        _time.Advance(TimeSpan.FromMinutes(1));
        await enforcer.RefreshAsync(CancellationToken.None);
        Assert.True(await enforcer.ApplyAsync(WebAndNoSsh, CancellationToken.None));
        Assert.Equal(4, _nft.Applied.Count);
    }

    [Fact]
    public async Task Kernel_revoked_flow_never_comes_back_after_many_applies()
    {
        await using var enforcer = NewEnforcer();
        Assert.True(await enforcer.ApplyAsync(WebAndNoSsh, CancellationToken.None));
        // The kernel stamps a flow the web rule accepts with the table's mark.
        _conntrack.Marks["web-flow"] = StampSetBy(_nft.Applied[^1], "web") | 0x0000_1234; // with bits of someone else's
        Assert.True(TrustsStamp(_nft.Applied[^1], _conntrack.Marks["web-flow"]));

        // Revoked, then 200 changed tables (a peer renaming itself at every login could cause as many).
        FirewallRule[] revoked = [Rule("other", RuleAction.Accept, RuleProtocol.Tcp, "100.64.0.1", "9000")];
        FirewallRule[] revokedToo = [Rule("other", RuleAction.Accept, RuleProtocol.Tcp, "100.64.0.1", "9001")];
        for (var i = 0; i < 200; i++)
        {
            Assert.True(await enforcer.ApplyAsync(i % 2 == 0 ? revoked : revokedToo, CancellationToken.None));
            Assert.False(TrustsStamp(_nft.Applied[^1], _conntrack.Marks["web-flow"]), $"table {i + 2} lets the revoked flow through on its old stamp");
        }

        Assert.Equal(0x0000_1234u, _conntrack.Marks["web-flow"] & ConntrackMarks.FreeMask); // bits the firewall does not own are never touched
        Assert.All(_conntrack.Cleared, c => Assert.Equal(ConntrackMarks.FirewallMask, c.Mask));
        Assert.All(_conntrack.Cleared, c => Assert.Equal(0u, c.Value & ConntrackMarks.ForwardedBit));
    }

    [Fact]
    public async Task Without_conntrack_no_table_trusts_a_stamp()
    {
        _conntrack.FailWith = "netlink recv: Protocol not supported";
        await using var enforcer = NewEnforcer();
        Assert.True(await enforcer.ApplyAsync(WebAndNoSsh, CancellationToken.None));
        Assert.DoesNotContain("ct state established ct mark", _nft.Applied[^1], StringComparison.Ordinal);
        Assert.Contains("ct state established ct direction reply accept", _nft.Applied[^1], StringComparison.Ordinal);

        // Once conntrack answers, the next table trusts its (cleared) stamp again.
        _conntrack.FailWith = null;
        Assert.True(await enforcer.ApplyAsync(WebAndNoSsh[..1], CancellationToken.None));
        Assert.Contains("ct state established ct mark", _nft.Applied[^1], StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_refused_table_keeps_the_previous_one_and_says_why_in_status()
    {
        await using var enforcer = NewEnforcer();
        Assert.True(await enforcer.ApplyAsync(WebAndNoSsh, CancellationToken.None));

        _nft.RefuseWith = "Error: Could not process rule: No such file or directory";
        Assert.False(await enforcer.ApplyAsync([], CancellationToken.None));

        Assert.Single(_nft.Applied);
        Assert.Equal(2, enforcer.Status.Rules);
        Assert.Contains("No such file or directory", enforcer.Status.Error, StringComparison.Ordinal);

        _nft.RefuseWith = null;
        Assert.True(await enforcer.ApplyAsync([], CancellationToken.None));
        Assert.Null(enforcer.Status.Error);
    }

    [Fact]
    public async Task Drop_counters_are_kept_across_table_replacements()
    {
        await using var enforcer = NewEnforcer();
        await enforcer.ApplyAsync(WebAndNoSsh, CancellationToken.None);
        _nft.Counters["drop_0"] = 5; // no-ssh, the only drop rule
        _nft.Counters["default_drop"] = 2;
        _nft.Counters["invalid"] = 1;
        _nft.Counters["stray"] = 40; // not one of ours: ignored

        await enforcer.RefreshAsync(CancellationToken.None);
        Assert.Equal(FirewallStatus.NftablesMode, enforcer.Status.Mode);
        Assert.Equal(new Dictionary<string, long> { ["no-ssh"] = 5 }, enforcer.Status.DropsByRule);
        Assert.Equal(2, enforcer.Status.DefaultDrops);
        Assert.Equal(1, enforcer.Status.InvalidDrops);

        // A changed table (the same rules are no apply at all): the kernel's counters start again at 0.
        Assert.True(await enforcer.ApplyAsync(WebAndNoSsh[1..], CancellationToken.None));
        Assert.Equal(2, _nft.Applied.Count);
        _nft.Counters["drop_0"] = 1;
        await enforcer.RefreshAsync(CancellationToken.None);

        Assert.Equal(6, enforcer.Status.DropsByRule["no-ssh"]);
        Assert.Equal(2, enforcer.Status.DefaultDrops);
        Assert.Null(enforcer.Status.ActiveFlows);
    }

    [Fact]
    public async Task Counter_reads_are_paced_by_how_long_nft_takes_to_list_them()
    {
        await using var enforcer = NewEnforcer();
        await enforcer.ApplyAsync(WebAndNoSsh, CancellationToken.None);
        _nft.OnList = () => _time.Advance(TimeSpan.FromMilliseconds(400)); // a table nft lists slowly

        _nft.Counters["default_drop"] = 1;
        await enforcer.RefreshAsync(CancellationToken.None);
        Assert.Equal(1, enforcer.Status.DefaultDrops);

        _nft.Counters["default_drop"] = 2;
        _time.Advance(TimeSpan.FromSeconds(3));
        await enforcer.RefreshAsync(CancellationToken.None);
        Assert.Equal(1, enforcer.Status.DefaultDrops); // 400 ms of listing buys 8 s of rest

        _time.Advance(TimeSpan.FromSeconds(5));
        await enforcer.RefreshAsync(CancellationToken.None);
        Assert.Equal(2, enforcer.Status.DefaultDrops);
    }

    [Fact]
    public async Task Disposing_removes_the_table()
    {
        var enforcer = NewEnforcer();
        await enforcer.ApplyAsync([], CancellationToken.None);

        await enforcer.DisposeAsync();

        Assert.Equal(["inet modular_mdl0"], _nft.Deleted);
        Assert.False(_nft.TableExists);
        await Assert.ThrowsAsync<ObjectDisposedException>(() => enforcer.ApplyAsync([], CancellationToken.None));
    }

    [Fact]
    public async Task The_engine_uses_nftables_for_an_interface_without_an_in_process_packet_path_and_drops_until_a_map_allows()
    {
        var recorder = NewRecorder();
        var engineFirewall = await EngineFirewall.AttachAsync(new RecordingWgIface(), _time, NullLogger.Instance, recorder, nftables: _nft);

        Assert.Null(engineFirewall.Firewall);
        Assert.NotNull(engineFirewall.Nftables);
        Assert.Equal(FirewallStatus.NftablesMode, recorder.Snapshot().Firewall.Mode);
        var initial = Assert.Single(_nft.Applied);
        Assert.Contains("counter name \"default_drop\" drop comment \"default-drop\"", initial, StringComparison.Ordinal);

        await engineFirewall.ApplyAsync(new NetworkMap
        {
            Serial = 1,
            FirewallRules =
            {
                new Modular.Control.Management.FirewallRule { RuleId = "web", PeerIp = "100.64.0.1/32", Direction = "in", Action = "accept", Protocol = "tcp", PortRanges = { new Modular.Control.Management.PortRange { Start = 80, End = 80 } } },
                new Modular.Control.Management.FirewallRule { RuleId = "routed", PeerIp = "100.64.0.0/10", Direction = "in", Action = "accept", Protocol = "all", Destination = "10.0.0.0/8" },
                new Modular.Control.Management.FirewallRule { RuleId = "bad", PeerIp = "nope", Direction = "in", Action = "accept", Protocol = "all" },
            },
        });

        Assert.Equal(2, _nft.Applied.Count);
        Assert.Matches("ip saddr 100\\.64\\.0\\.1/32 tcp dport 80 counter ct mark set ct mark & 0x80ffffff \\| 0x[0-7][0-9a-f]000000 accept comment \"web\"", _nft.Applied[1]);
        Assert.DoesNotContain("routed", _nft.Applied[1], StringComparison.Ordinal);
        Assert.Equal(1, recorder.Snapshot().Firewall.Rules);

        _nft.Counters["default_drop"] = 3;
        _time.Advance(EngineFirewall.StatusInterval);
        await WaitForAsync(() => recorder.Snapshot().Firewall.DefaultDrops == 3);

        await engineFirewall.DisposeAsync();
        Assert.Equal(["inet modular_fake0"], _nft.Deleted);
    }

    [Fact]
    public async Task An_agent_stopped_while_attaching_leaves_no_table()
    {
        using var stopped = new CancellationTokenSource();
        await stopped.CancelAsync();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => EngineFirewall.AttachAsync(new RecordingWgIface(), _time, NullLogger.Instance, nftables: _nft, cancellationToken: stopped.Token));

        Assert.Equal(["inet modular_fake0"], _nft.Deleted);
    }

    [Fact]
    public async Task A_missing_or_refusing_nft_is_reported_and_the_agent_goes_on()
    {
        _nft.RefuseWith = "nft: not found";
        var recorder = NewRecorder();
        await using var engineFirewall = await EngineFirewall.AttachAsync(new RecordingWgIface(), _time, NullLogger.Instance, recorder, nftables: _nft);

        await engineFirewall.ApplyAsync(new NetworkMap { Serial = 1 });

        Assert.Equal(FirewallStatus.NftablesMode, recorder.Snapshot().Firewall.Mode);
        Assert.Contains("nft: not found", recorder.Snapshot().Firewall.Error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_userspace_interface_reports_userspace_counters_in_status()
    {
        var recorder = NewRecorder();
        var iface = new UserspaceWgIface(new WgIfaceOptions("mdlfwtest", WgKeys.GeneratePrivateKey(), IPAddress.Parse("100.64.0.2"), 10), NullLoggerFactory.Instance, TimeProvider.System);
        await using var engineFirewall = await EngineFirewall.AttachAsync(iface, _time, NullLogger.Instance, recorder, nftables: _nft);

        Assert.Empty(_nft.Applied);
        Assert.False(iface.PacketFilter!.AllowInbound(Tcp("100.64.0.1", 40000, "100.64.0.2", 22, Modular.Core.Firewall.TcpFlags.Syn)));
        Assert.False(iface.PacketFilter!.AllowInbound([0x45]));
        await engineFirewall.RefreshStatusAsync(CancellationToken.None);

        var status = recorder.Snapshot().Firewall;
        Assert.Equal(FirewallStatus.UserspaceMode, status.Mode);
        Assert.Equal(1, status.DefaultDrops);
        Assert.Equal(1, status.MalformedDrops);
        Assert.Equal(0, status.ActiveFlows);
        Assert.Equal(2, status.TotalDrops);

        await engineFirewall.ApplyAsync(new NetworkMap
        {
            Serial = 1,
            FirewallRules =
            {
                new Modular.Control.Management.FirewallRule { RuleId = "web", PeerIp = "100.64.0.1/32", Direction = "in", Action = "accept", Protocol = "tcp", PortRanges = { new Modular.Control.Management.PortRange { Start = 80, End = 80 } } },
                new Modular.Control.Management.FirewallRule { RuleId = "no-telnet", PeerIp = "100.64.0.0/10", Direction = "in", Action = "drop", Protocol = "tcp", PortRanges = { new Modular.Control.Management.PortRange { Start = 23, End = 23 } } },
            },
        });
        Assert.Equal(new Dictionary<string, long> { ["no-telnet"] = 0 }, recorder.Snapshot().Firewall.DropsByRule);
        Assert.False(iface.PacketFilter!.AllowInbound(Tcp("100.64.0.1", 40001, "100.64.0.2", 23, Modular.Core.Firewall.TcpFlags.Syn)));
        Assert.True(iface.PacketFilter!.AllowInbound(Tcp("100.64.0.1", 40002, "100.64.0.2", 80, Modular.Core.Firewall.TcpFlags.Syn)));
        await engineFirewall.RefreshStatusAsync(CancellationToken.None);

        status = recorder.Snapshot().Firewall;
        Assert.Equal(new Dictionary<string, long> { ["no-telnet"] = 1 }, status.DropsByRule); // accept rules have no drops to show
        Assert.Equal(2, status.Rules);
        Assert.Equal(1, status.ActiveFlows);
    }

    /// <summary>The mark the accept of <paramref name="ruleId"/> in <paramref name="script"/> stamps (the firewall's bits).</summary>
    private static uint StampSetBy(string script, string ruleId)
    {
        var match = System.Text.RegularExpressions.Regex.Match(script, $"\\| 0x([0-9a-f]{{8}}) accept comment \"{ruleId}\"");
        Assert.True(match.Success, script);
        return uint.Parse(match.Groups[1].Value, System.Globalization.NumberStyles.HexNumber, System.Globalization.CultureInfo.InvariantCulture);
    }

    /// <summary>Whether the table lets an established flow with <paramref name="mark"/> through without its rules, as nft would evaluate its one stamp check.</summary>
    private static bool TrustsStamp(string script, uint mark)
    {
        var check = System.Text.RegularExpressions.Regex.Match(script, "ct state established ct mark & 0x([0-9a-f]{8}) == 0x([0-9a-f]{8}) accept");
        if (!check.Success)
        {
            return false;
        }

        var mask = uint.Parse(check.Groups[1].Value, System.Globalization.NumberStyles.HexNumber, System.Globalization.CultureInfo.InvariantCulture);
        var value = uint.Parse(check.Groups[2].Value, System.Globalization.NumberStyles.HexNumber, System.Globalization.CultureInfo.InvariantCulture);
        return (mark & mask) == value;
    }

    private static StatusRecorder NewRecorder() => new(
        new InterfaceStatus("mdl0", "kernel", 51820, 1280),
        new FeatureStatus(false, "15m", [], false, "auto", false, false, false),
        "key",
        new ServiceStatus("", false, null),
        new ServiceStatus("", false, null));

    /// <summary>The status timer runs its nft read on the thread pool: wait for it, bounded.</summary>
    private static async Task WaitForAsync(Func<bool> condition)
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        while (!condition())
        {
            await Task.Delay(10, timeout.Token);
        }
    }
}
