using BenchmarkDotNet.Attributes;
using Microsoft.Extensions.Time.Testing;
using Modular.WireGuard.Crypto;
using Modular.WireGuard.Noise;

namespace Modular.Benchmarks.WireGuard;

/// <summary>Handshake creation and consumption (X25519 through NSec, BLAKE2s through BouncyCastle).</summary>
[MemoryDiagnoser]
public class HandshakeBenchmarks
{
    private readonly FakeTimeProvider _time = new();
    private readonly byte[] _initiation = new byte[MessageLayout.InitiationSize];
    private readonly byte[] _response = new byte[MessageLayout.ResponseSize];
    private readonly byte[] _timestamp = new byte[Tai64N.Size];
    private StaticIdentity _initiator = null!;
    private StaticIdentity _responder = null!;
    private HandshakeState _towardResponder = null!;
    private HandshakeState _towardInitiator = null!;
    private CookieGenerator _cookies = null!;
    private CookieChecker _checker = null!;

    [GlobalSetup]
    public void Setup()
    {
        var key = new byte[32];
        Curve25519.GeneratePrivateKey(key);
        _initiator = new StaticIdentity(key);
        Curve25519.GeneratePrivateKey(key);
        _responder = new StaticIdentity(key);
        _towardResponder = new HandshakeState(_responder.PublicKey);
        _towardResponder.ComputeStaticStatic(_initiator);
        _towardInitiator = new HandshakeState(_initiator.PublicKey);
        _towardInitiator.ComputeStaticStatic(_responder);
        _cookies = new CookieGenerator(_responder.PublicKey, _time);
        _checker = new CookieChecker(_responder.PublicKey, _time);
        CreateInitiation();
    }

    [Benchmark]
    public bool CreateInitiation()
    {
        Tai64N.Write(_timestamp, DateTimeOffset.UtcNow);
        var ok = NoiseProtocol.CreateInitiation(_towardResponder, _initiator, 1, _timestamp, _initiation);
        _cookies.AddMacs(_initiation);
        return ok;
    }

    /// <summary>What a responder does per initiation: mac1, consume, respond, derive keys.</summary>
    [Benchmark]
    public bool ConsumeInitiationAndRespond()
    {
        // Each round must look new: forget the last timestamp and the flood guard.
        _towardInitiator.LastTimestamp.AsSpan().Clear();
        _towardInitiator.LastInitiationConsumed = null;
        if (!_checker.CheckMac1(_initiation) || NoiseProtocol.ConsumeInitiation(_initiation, _responder, _ => _towardInitiator, _time, TimeSpan.Zero) is null)
        {
            return false;
        }

        lock (_towardInitiator.Lock)
        {
            var ok = NoiseProtocol.CreateResponse(_towardInitiator, 2, _response);
            NoiseProtocol.DeriveSessionKeys(_towardInitiator);
            return ok;
        }
    }
}
