using System.Buffers.Binary;
using BenchmarkDotNet.Attributes;
using Modular.Core.Firewall;

namespace Modular.Benchmarks;

/// <summary>
/// Firewall cost per packet on the in-process path with 1, 100 and 10,000 rules: the first packet of a new
/// (accepted, then tracked) connection, a packet of an established connection, and a new connection the
/// rules drop. The matching rule is the least specific one, so the lookup walks past all the others.
/// </summary>
[MemoryDiagnoser]
public class FirewallBenchmarks
{
    private const int NewFlows = 20_000;

    private StatefulFirewall _firewall = null!;
    private byte[][] _syns = null!;
    private byte[] _established = null!;
    private byte[] _dropped = null!;

    [Params(1, 100, 10_000)]
    public int Rules { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _syns = new byte[NewFlows][];
        for (var i = 0; i < NewFlows; i++)
        {
            _syns[i] = Tcp(0x64400000u | (uint)(1 + (i / 50_000)), (ushort)(1024 + (i % 50_000)), 0x64400002u, 80, flags: 0x02);
        }

        _established = Tcp(0x64400001u, 999, 0x64400002u, 80, flags: 0x10);
        _dropped = Tcp(0x64400001u, 999, 0x64400002u, 22, flags: 0x02);
        _firewall = NewFirewall();
        OpenEstablished(_firewall);
    }

    [GlobalCleanup]
    public void Cleanup() => _firewall.Dispose();

    [IterationSetup(Target = nameof(NewFlowAccepted))]
    public void FreshTable()
    {
        _firewall.Dispose();
        _firewall = NewFirewall();
    }

    /// <summary>Rule lookup plus a new connection-table entry.</summary>
    [Benchmark(OperationsPerInvoke = NewFlows)]
    public int NewFlowAccepted()
    {
        var passed = 0;
        foreach (var syn in _syns)
        {
            passed += _firewall.AllowInbound(syn) ? 1 : 0;
        }

        return passed;
    }

    /// <summary>A connection-table hit: no rule lookup at all.</summary>
    [Benchmark]
    public bool EstablishedFlow() => _firewall.AllowInbound(_established);

    /// <summary>Rule lookup and a drop counted against the rule; nothing tracked.</summary>
    [Benchmark]
    public bool NewFlowDropped() => _firewall.AllowInbound(_dropped);

    private StatefulFirewall NewFirewall()
    {
        var firewall = new StatefulFirewall(new FirewallOptions { MaxFlows = 1 << 20 });
        var rules = new List<FirewallRule>(Rules);
        var overlay = Prefix("100.64.0.0/10");
        rules.Add(new FirewallRule("web", RuleDirection.Inbound, RuleAction.Accept, RuleProtocol.Tcp, overlay, [new PortRange(80, 80), new PortRange(443, 443)]));
        if (Rules > 1)
        {
            rules.Add(new FirewallRule("no-ssh", RuleDirection.Inbound, RuleAction.Drop, RuleProtocol.Tcp, overlay, [new PortRange(22, 22)]));
        }

        var random = new Random(7);
        for (var i = rules.Count; i < Rules; i++)
        {
            // Other hosts' rules (more specific prefixes that these packets' source does not match) and other ports.
            var host = Prefix($"100.65.{random.Next(256)}.{random.Next(1, 255)}/32");
            var port = (ushort)random.Next(1000, 60000);
            rules.Add(new FirewallRule($"r{i}", RuleDirection.Inbound, i % 5 == 0 ? RuleAction.Drop : RuleAction.Accept, (RuleProtocol)(1 + (i % 2)), i % 3 == 0 ? overlay : host, [new PortRange(port, (ushort)(port + random.Next(0, 50)))]));
        }

        firewall.UpdateRules(rules);
        return firewall;
    }

    private void OpenEstablished(StatefulFirewall firewall)
    {
        firewall.AllowInbound(Tcp(0x64400001u, 999, 0x64400002u, 80, flags: 0x02));
        firewall.AllowOutbound(Tcp(0x64400002u, 80, 0x64400001u, 999, flags: 0x12));
        if (!firewall.AllowInbound(_established))
        {
            throw new InvalidOperationException("benchmark setup: the established flow did not pass");
        }
    }

    private static IpPrefix128 Prefix(string text) => IpPrefix128.TryParse(text, out var prefix) ? prefix : throw new ArgumentException(text);

    private static byte[] Tcp(uint source, ushort sourcePort, uint destination, ushort destinationPort, byte flags)
    {
        var packet = new byte[20 + 20 + 64];
        packet[0] = 0x45;
        BinaryPrimitives.WriteUInt16BigEndian(packet.AsSpan(2), (ushort)packet.Length);
        packet[9] = 6;
        BinaryPrimitives.WriteUInt32BigEndian(packet.AsSpan(12), source);
        BinaryPrimitives.WriteUInt32BigEndian(packet.AsSpan(16), destination);
        BinaryPrimitives.WriteUInt16BigEndian(packet.AsSpan(20), sourcePort);
        BinaryPrimitives.WriteUInt16BigEndian(packet.AsSpan(22), destinationPort);
        packet[32] = 5 << 4;
        packet[33] = flags;
        return packet;
    }
}
