using System.Diagnostics;
using Microsoft.Extensions.Time.Testing;
using Modular.Plugins.Rosenpass.Protocol;
using Xunit.Abstractions;

namespace Modular.Rosenpass.Tests;

/// <summary>
/// Issue 15's benchmark (<c>scripts/bench rosenpass</c>, MODULAR_BENCH=1): McEliece-460896 key generation, and one
/// exchange's CPU time per side and bytes on the wire, with the real protocol (server pairs, datagrams in memory, V02
/// and V03). Each side's time is the process CPU time over its own steps, run for all pairs at once (ROUNDS, 50) so the
/// clock's granularity does not matter. Not a timed test: it prints its numbers; it asserts only that every exchange agreed.
/// </summary>
public sealed class RosenpassBenchmark(ITestOutputHelper output)
{
    [SkippableFact]
    public void Key_generation_and_one_exchange_cpu_per_side_and_bytes()
    {
        Skip.IfNot(Environment.GetEnvironmentVariable("MODULAR_BENCH") == "1", "benchmark: set MODULAR_BENCH=1");
        var rounds = int.TryParse(Environment.GetEnvironmentVariable("ROUNDS"), out var r) && r > 0 ? r : 50;

        var keygen = new List<double>();
        for (var i = 0; i < Math.Min(rounds, 3); i++)
        {
            var started = CpuMs();
            _ = CryptoServer.GenerateStaticKeyPair();
            keygen.Add(CpuMs() - started);
        }

        output.WriteLine($"McEliece-460896 key generation: {Median(keygen):F0} ms CPU (median of {keygen.Count})");
        foreach (var version in new[] { ProtocolVersion.V02, ProtocolVersion.V03 })
        {
            _ = Exchanges(version, 2); // warm-up (JIT)
            var (initiator, responder, bytes) = Exchanges(version, rounds);
            output.WriteLine($"{version}: one exchange: initiator {initiator:F2} ms CPU, responder {responder:F2} ms CPU, {bytes} bytes in 4 datagrams (mean of {rounds})");
        }
    }

    /// <summary>
    /// <paramref name="count"/> exchanges (InitHello, RespHello, InitConf, EmptyData) between fresh server pairs, step by
    /// step over all pairs at once, so each step's CPU time is long enough to measure; the mean CPU ms per exchange at
    /// each side, and the bytes of one exchange.
    /// </summary>
    private static (double Initiator, double Responder, int Bytes) Exchanges(ProtocolVersion version, int count)
    {
        var time = new FakeTimeProvider(new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero));
        var pairs = Enumerable.Range(0, count).Select(_ =>
        {
            var a = new CryptoServer(StaticKeys.A.Secret, StaticKeys.A.Public, time);
            var b = new CryptoServer(StaticKeys.B.Secret, StaticKeys.B.Public, time);
            return (A: a, B: b, PeerB: a.AddPeer(StaticKeys.B.Public, null, version), PeerA: b.AddPeer(StaticKeys.A.Public, null, version),
                ToB: new byte[CryptoServer.MaxMessageSize], ToA: new byte[CryptoServer.MaxMessageSize]);
        }).ToList();
        var lengths = new int[count];
        double atA = 0, atB = 0;
        var bytes = 0;

        var started = CpuMs();
        for (var i = 0; i < count; i++)
        {
            lengths[i] = pairs[i].A.InitiateHandshake(pairs[i].PeerB, pairs[i].ToB); // InitHello
        }

        atA += CpuMs() - started;
        bytes += lengths[0];
        started = CpuMs();
        for (var i = 0; i < count; i++)
        {
            lengths[i] = pairs[i].B.HandleMessage(pairs[i].ToB.AsSpan(0, lengths[i]), pairs[i].ToA).ResponseLength; // RespHello
        }

        atB += CpuMs() - started;
        bytes += lengths[0];
        started = CpuMs();
        for (var i = 0; i < count; i++)
        {
            lengths[i] = pairs[i].A.HandleMessage(pairs[i].ToA.AsSpan(0, lengths[i]), pairs[i].ToB).ResponseLength; // InitConf
        }

        atA += CpuMs() - started;
        bytes += lengths[0];
        started = CpuMs();
        for (var i = 0; i < count; i++)
        {
            lengths[i] = pairs[i].B.HandleMessage(pairs[i].ToB.AsSpan(0, lengths[i]), pairs[i].ToA).ResponseLength; // EmptyData
        }

        atB += CpuMs() - started;
        bytes += lengths[0];
        started = CpuMs();
        for (var i = 0; i < count; i++)
        {
            pairs[i].A.HandleMessage(pairs[i].ToA.AsSpan(0, lengths[i]), pairs[i].ToB);
        }

        atA += CpuMs() - started;
        foreach (var pair in pairs)
        {
            Assert.Equal(pair.A.OutputKey(pair.PeerB), pair.B.OutputKey(pair.PeerA));
        }

        return (atA / count, atB / count, bytes);
    }

    /// <summary>This process's CPU time in ms (the benchmark runs alone, on one thread).</summary>
    private static double CpuMs() => Process.GetCurrentProcess().TotalProcessorTime.TotalMilliseconds;

    private static double Median(List<double> values)
    {
        var sorted = values.Order().ToList();
        return sorted.Count % 2 == 1 ? sorted[sorted.Count / 2] : (sorted[(sorted.Count / 2) - 1] + sorted[sorted.Count / 2]) / 2;
    }
}
