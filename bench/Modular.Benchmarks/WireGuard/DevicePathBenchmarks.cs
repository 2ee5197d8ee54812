using System.Net;
using BenchmarkDotNet.Attributes;
using Microsoft.Extensions.Logging.Abstractions;
using Modular.Abstractions.WireGuard;
using Modular.Testing.WireGuard;
using Modular.WireGuard.Conn;
using Modular.WireGuard.Crypto;
using Modular.WireGuard.Device;

namespace Modular.Benchmarks.WireGuard;

/// <summary>
/// The device's outbound path for one TUN batch of 32 × 1400-byte packets: route lookup, counter,
/// padding, in-place encryption, grouping and the hand-off to the bind (a discarding sink here, so
/// no socket cost is included). Divide by 32 for the per-packet cost.
/// </summary>
[MemoryDiagnoser]
public class DevicePathBenchmarks
{
    private const int Batch = 32;
    private readonly byte[][] _buffers = Enumerable.Range(0, Batch).Select(_ => new byte[PacketBuffers.MaxSegmentSize]).ToArray();
    private readonly int[] _sizes = new int[Batch];
    private readonly byte[][] _groupBuffers = new byte[Batch][];
    private readonly int[] _groupSizes = new int[Batch];
    private readonly List<Peer> _staged = [];
    private readonly List<Peer> _rekey = [];
    private readonly byte[] _packet = new byte[1400];
    private WgDevice _a = null!;
    private WgDevice _b = null!;
    private IDisposable _claim = null!;

    private sealed class DiscardSink : IDatagramSink
    {
        public long Bytes;

        public void Send(ReadOnlySpan<byte> datagram) => Bytes += datagram.Length;
    }

    [GlobalSetup]
    public void Setup()
    {
        var binds = new InMemoryBindPair();
        var tunA = new InMemoryTun("benchA");
        var tunB = new InMemoryTun("benchB");
        _a = new WgDevice(tunA, binds.A, NullLoggerFactory.Instance, TimeProvider.System);
        _b = new WgDevice(tunB, binds.B, NullLoggerFactory.Instance, TimeProvider.System);
        var key = new byte[32];
        Curve25519.GeneratePrivateKey(key);
        _a.SetPrivateKey(new WgKey(key));
        Curve25519.GeneratePrivateKey(key);
        _b.SetPrivateKey(new WgKey(key));
        _a.SetListenPort(51820);
        _b.SetListenPort(51821);
        _a.SetPeer(new WgPeerConfig(_b.PublicKey, [IPNetwork.Parse("100.64.0.2/32")], IPEndPoint.Parse("198.18.0.2:51821")));
        _b.SetPeer(new WgPeerConfig(_a.PublicKey, [IPNetwork.Parse("100.64.0.1/32")], IPEndPoint.Parse("198.18.0.1:51820")));
        _a.Up();
        _b.Up();

        _packet[0] = 0x45;
        _packet[2] = 1400 >> 8;
        _packet[3] = 1400 & 0xff;
        _packet[9] = 253;
        IPAddress.Parse("100.64.0.1").TryWriteBytes(_packet.AsSpan(12), out _);
        IPAddress.Parse("100.64.0.2").TryWriteBytes(_packet.AsSpan(16), out _);
        tunA.Inject(_packet);
        if (tunB.TryReadWritten(TimeSpan.FromSeconds(30)) is null)
        {
            throw new InvalidOperationException("No handshake between the benchmark devices.");
        }

        _claim = _a.BindHook.ClaimEndpoint(IPEndPoint.Parse("198.18.0.2:51821"), new DiscardSink());
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _claim.Dispose();
        _a.Dispose();
        _b.Dispose();
    }

    [Benchmark(OperationsPerInvoke = Batch)]
    public void OutboundPerPacket1400()
    {
        for (var i = 0; i < Batch; i++)
        {
            _packet.CopyTo(_buffers[i], 16);
            _sizes[i] = _packet.Length;
        }

        _a.ProcessOutbound(_buffers, _sizes, Batch, _groupBuffers, _groupSizes, _staged, _rekey);
    }
}
