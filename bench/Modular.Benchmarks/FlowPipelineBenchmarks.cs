using System.Buffers.Binary;
using System.Net;
using BenchmarkDotNet.Attributes;
using Modular.Abstractions.Flows;
using Modular.Core.Firewall;
using Modular.Plugins.Netflow;

namespace Modular.Benchmarks;

/// <summary>
/// Flow events per second on the agent, up to the netflow plugin's store (what ships them is measured by
/// Modular.Server.Tests' FlowUploadBenchmark):
/// <list type="bullet">
/// <item><c>UserspaceNewFlow</c> / <c>UserspaceNewFlowNoSink</c>: an opening SYN through the userspace firewall with
/// flow logging on (rule lookup, a table entry, the Start event built, named and emitted to the netflow plugin's
/// <see cref="NetflowSink"/>, whose <see cref="PendingFlowStore"/> holds the default 10,000) and, for comparison, the same firewall without a sink;</item>
/// <item><c>KernelEventReported</c>: a conntrack event put through <see cref="FlowEventEmitter.Report"/> (kernel mode's
/// path: the collect filters and the peer/resource names) into the store.</item>
/// </list>
/// The store is full after the first 10,000 events, so each Add also drops the oldest (the steady state of an agent
/// whose server is away).
/// </summary>
[MemoryDiagnoser]
public class FlowPipelineBenchmarks
{
    private const int NewFlows = 20_000;

    private byte[][] _syns = null!;
    private StatefulFirewall _withSink = null!;
    private StatefulFirewall _withoutSink = null!;
    private FlowEventEmitter _emitter = null!;
    private FlowEvent _kernelEvent = null!;
    private NetflowSink _store = null!;

    [GlobalSetup]
    public void Setup()
    {
        _syns = new byte[NewFlows][];
        for (var i = 0; i < NewFlows; i++)
        {
            _syns[i] = Tcp(0x64400000u | (uint)(1 + (i / 50_000)), (ushort)(1024 + (i % 50_000)), 0x64400002u, 80);
        }

        // The plugin's sink, not started: nothing ships, so the store stays full and drops its oldest.
        _store = new NetflowSink(NetflowSinkFactory.DefaultCapacity, null, null, ShippingOptions.Default, TimeProvider.System, Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance);
        var switchable = new SwitchableFlowSink { Target = _store, Collection = new FlowCollection(true, false, false) };
        _emitter = new FlowEventEmitter(switchable, TimeProvider.System, int.MaxValue);
        _kernelEvent = new FlowEvent(Guid.NewGuid(), Guid.NewGuid(), DateTimeOffset.UtcNow, FlowEventType.Start, FlowDirection.Ingress, 6,
            IPAddress.Parse("100.64.0.1"), 40000, IPAddress.Parse("100.64.0.2"), 80, 0, 0, 1, 60, 0, 0, "policy-1", null, null);
        FreshFirewalls();
    }

    [IterationSetup(Targets = [nameof(UserspaceNewFlow), nameof(UserspaceNewFlowNoSink)])]
    public void FreshFirewalls()
    {
        _withSink?.Dispose();
        _withoutSink?.Dispose();
        var switchable = new SwitchableFlowSink { Target = _store, Collection = new FlowCollection(true, false, false) };
        _withSink = NewFirewall(switchable);
        _withoutSink = NewFirewall(null);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _withSink.Dispose();
        _withoutSink.Dispose();
        _store.DisposeAsync().AsTask().GetAwaiter().GetResult();
    }

    /// <summary>New flow accepted, its Start event into the store.</summary>
    [Benchmark(OperationsPerInvoke = NewFlows)]
    public int UserspaceNewFlow() => Run(_withSink);

    /// <summary>The same, flow logging off (no sink): the firewall's own cost.</summary>
    [Benchmark(OperationsPerInvoke = NewFlows, Baseline = true)]
    public int UserspaceNewFlowNoSink() => Run(_withoutSink);

    /// <summary>One kernel event: filtered, named, into the store.</summary>
    [Benchmark]
    public void KernelEventReported() => _emitter.Emit(_emitter.Report(_kernelEvent));

    private int Run(StatefulFirewall firewall)
    {
        var passed = 0;
        foreach (var syn in _syns)
        {
            passed += firewall.AllowInbound(syn) ? 1 : 0;
        }

        return passed;
    }

    private static StatefulFirewall NewFirewall(IFlowSink? sink)
    {
        var firewall = new StatefulFirewall(new FirewallOptions { MaxFlows = 1 << 20 }, TimeProvider.System, sink);
        var overlay = IpPrefix128.TryParse("100.64.0.0/10", out var prefix) ? prefix : throw new InvalidOperationException();
        firewall.UpdateRules([new FirewallRule("web", RuleDirection.Inbound, RuleAction.Accept, RuleProtocol.Tcp, overlay, [new PortRange(80, 80)])]);
        return firewall;
    }

    private static byte[] Tcp(uint source, ushort sourcePort, uint destination, ushort destinationPort)
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
        packet[33] = 0x02;
        return packet;
    }
}
