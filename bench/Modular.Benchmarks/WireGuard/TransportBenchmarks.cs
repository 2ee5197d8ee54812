using BenchmarkDotNet.Attributes;
using Modular.WireGuard.Noise;

namespace Modular.Benchmarks.WireGuard;

/// <summary>Transport data encryption and decryption of one 1400-byte packet, in place, with reused keys.</summary>
[MemoryDiagnoser]
public class TransportBenchmarks
{
    private const int PayloadSize = 1400;
    private readonly byte[] _buffer = new byte[16 + PayloadSize + 16];
    private readonly byte[] _sealed = new byte[16 + PayloadSize + 16];
    private Keypair _sender = null!;
    private Keypair _receiver = null!;
    private ulong _counter;

    [GlobalSetup]
    public void Setup()
    {
        var a = new byte[32];
        var b = new byte[32];
        Random.Shared.NextBytes(a);
        Random.Shared.NextBytes(b);
        _sender = new Keypair(new SessionKeys((byte[])a.Clone(), (byte[])b.Clone(), true, 1, 2), 0);
        _receiver = new Keypair(new SessionKeys((byte[])b.Clone(), (byte[])a.Clone(), false, 2, 1), 0);
        Random.Shared.NextBytes(_sealed.AsSpan(16, PayloadSize));
        _sender.Seal(7, _sealed.AsSpan(16, PayloadSize), _sealed.AsSpan(16));
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _sender.Dispose();
        _receiver.Dispose();
    }

    [Benchmark]
    public bool Encrypt1400()
    {
        var payload = _buffer.AsSpan(16, PayloadSize + 16);
        return _sender.Seal(_counter++, payload[..PayloadSize], payload);
    }

    [Benchmark]
    public bool Decrypt1400()
    {
        // Decrypting a copy keeps the input authentic on every iteration.
        _sealed.AsSpan().CopyTo(_buffer);
        return _receiver.Open(7, _buffer.AsSpan(16), _buffer.AsSpan(16, PayloadSize));
    }
}
