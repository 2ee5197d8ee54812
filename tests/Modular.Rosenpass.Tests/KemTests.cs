using System.Diagnostics;
using Microsoft.Extensions.Time.Testing;
using Modular.Plugins.Rosenpass.Protocol;
using Xunit.Abstractions;
using static Modular.Rosenpass.Tests.RosenpassVectors;

namespace Modular.Rosenpass.Tests;

/// <summary>The BouncyCastle KEMs: sizes, round trips, upstream compatibility of McEliece, and a timing note.</summary>
public sealed class KemTests(ITestOutputHelper output)
{
    [Fact]
    public void McEliece_HasUpstreamsSizes_AndRoundTrips()
    {
        var (secret, pub) = StaticKeys.A;
        Assert.Equal(McElieceKem.PublicKeySize, pub.Length);
        Assert.Equal(McElieceKem.SecretKeySize, secret.Length);
        var (sharedKey, ciphertext) = McElieceKem.Instance.Encapsulate(pub);
        Assert.Equal(McElieceKem.CiphertextSize, ciphertext.Length);
        Assert.Equal(32, sharedKey.Length);
        Assert.Equal(sharedKey, McElieceKem.Instance.Decapsulate(secret, ciphertext));

        // Another key pair's secret key (or a changed ciphertext) gives another key: implicit rejection.
        Assert.NotEqual(sharedKey, McElieceKem.Instance.Decapsulate(StaticKeys.B.Secret, ciphertext));
        ciphertext[0] ^= 1;
        Assert.NotEqual(sharedKey, McElieceKem.Instance.Decapsulate(secret, ciphertext));
    }

    [Fact]
    public void McEliece_DecapsulatesUpstreamsRecordedCiphertexts()
    {
        // liboqs (upstream) encapsulated these; BouncyCastle must read the same key encodings.
        var inputs = Inputs;
        Assert.Equal(inputs.Bytes("IHI5 shk"), McElieceKem.Instance.Decapsulate(inputs.Bytes("peer_b_sk"), inputs.Bytes("IHI5 sctr")));
        Assert.Equal(inputs.Bytes("RHR5 shk"), McElieceKem.Instance.Decapsulate(inputs.Bytes("peer_a_sk"), inputs.Bytes("RHR5 scti")));
    }

    [Fact]
    public void McEliece_EncapsulatesToUpstreamsPublicKeys()
    {
        var inputs = Inputs;
        var (sharedKey, ciphertext) = McElieceKem.Instance.Encapsulate(inputs.Bytes("peer_b_pk"));
        Assert.Equal(sharedKey, McElieceKem.Instance.Decapsulate(inputs.Bytes("peer_b_sk"), ciphertext));
    }

    [Fact]
    public void MlKem512_HasKybersSizes_AndRoundTrips()
    {
        var (secret, pub) = MlKem512.Instance.GenerateKeyPair();
        Assert.Equal(MlKem512.PublicKeySize, pub.Length);
        var (sharedKey, ciphertext) = MlKem512.Instance.Encapsulate(pub);
        Assert.Equal(MlKem512.CiphertextSize, ciphertext.Length);
        Assert.Equal(sharedKey, MlKem512.Instance.Decapsulate(secret, ciphertext));
        ciphertext[5] ^= 1;
        Assert.NotEqual(sharedKey, MlKem512.Instance.Decapsulate(secret, ciphertext));
    }

    /// <summary>Not an assertion: the numbers for the report (McEliece key generation, one exchange's CPU per side and bytes).</summary>
    [Fact]
    public void TimingNote()
    {
        var process = Process.GetCurrentProcess();
        var cpu = process.TotalProcessorTime;
        var wall = Stopwatch.StartNew();
        _ = CryptoServer.GenerateStaticKeyPair();
        process.Refresh();
        output.WriteLine($"McEliece-460896 key generation: {wall.ElapsedMilliseconds} ms wall, {(process.TotalProcessorTime - cpu).TotalMilliseconds:F0} ms CPU");

        var pub = StaticKeys.A.Public;
        var (_, ciphertext) = McElieceKem.Instance.Encapsulate(pub);
        var (ephemeralSecret, ephemeralPublic) = MlKem512.Instance.GenerateKeyPair();
        var (_, ephemeralCiphertext) = MlKem512.Instance.Encapsulate(ephemeralPublic);
        output.WriteLine(
            $"median of 5 after a warm-up: McEliece encapsulation {Median(() => McElieceKem.Instance.Encapsulate(pub)):F1} ms, " +
            $"decapsulation {Median(() => McElieceKem.Instance.Decapsulate(StaticKeys.A.Secret, ciphertext)):F1} ms; " +
            $"ML-KEM-512 key generation + encapsulation + decapsulation {Median(() => MlKem512.Instance.GenerateKeyPair()) + Median(() => MlKem512.Instance.Encapsulate(ephemeralPublic)) + Median(() => MlKem512.Instance.Decapsulate(ephemeralSecret, ephemeralCiphertext)):F1} ms; " +
            $"keyed hash of a 524,160-byte public key: V02 {Median(() => KeyedHash.Hash(ProtocolVersion.V02, new byte[32], pub)):F1} ms, V03 {Median(() => KeyedHash.Hash(ProtocolVersion.V03, new byte[32], pub)):F1} ms");

        var time = new FakeTimeProvider();
        var a = new CryptoServer(StaticKeys.A.Secret, StaticKeys.A.Public, time);
        var b = new CryptoServer(StaticKeys.B.Secret, StaticKeys.B.Public, time);
        var toB = a.AddPeer(StaticKeys.B.Public, null);
        var toA = b.AddPeer(StaticKeys.A.Public, null);
        var buffer = new byte[CryptoServer.MaxMessageSize];
        for (var round = 0; round < 4; round++)
        {
            var initiator = Stopwatch.StartNew();
            var initHello = buffer[..a.InitiateHandshake(toB, buffer)];
            initiator.Stop();
            var responder = Stopwatch.StartNew();
            var respHello = buffer[..b.HandleMessage(initHello, buffer).ResponseLength];
            responder.Stop();
            initiator.Start();
            var initConf = buffer[..a.HandleMessage(respHello, buffer).ResponseLength];
            initiator.Stop();
            responder.Start();
            var emptyData = buffer[..b.HandleMessage(initConf, buffer).ResponseLength];
            responder.Stop();
            initiator.Start();
            a.HandleMessage(emptyData, buffer);
            initiator.Stop();
            Assert.Equal(a.OutputKey(toB), b.OutputKey(toA));
            output.WriteLine(
                $"exchange {round}: initiator {initiator.Elapsed.TotalMilliseconds:F1} ms, responder {responder.Elapsed.TotalMilliseconds:F1} ms (single-threaded, wall = CPU); " +
                $"bytes initiator->responder {initHello.Length + initConf.Length}, responder->initiator {respHello.Length + emptyData.Length}");
        }
    }

    private static double Median(Func<object> operation)
    {
        _ = operation();
        var samples = new List<double>();
        for (var i = 0; i < 5; i++)
        {
            var watch = Stopwatch.StartNew();
            _ = operation();
            samples.Add(watch.Elapsed.TotalMilliseconds);
        }

        samples.Sort();
        return samples[2];
    }
}
