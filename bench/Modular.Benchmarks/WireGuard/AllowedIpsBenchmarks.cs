using System.Net;
using BenchmarkDotNet.Attributes;
using Modular.WireGuard.Routing;

namespace Modular.Benchmarks.WireGuard;

/// <summary>Longest-prefix lookups in a table of 10,000 prefixes (IPv4 /16../32 and IPv6 /48../128).</summary>
[MemoryDiagnoser]
public class AllowedIpsBenchmarks
{
    private readonly AllowedIps<object> _table = new();
    private readonly byte[][] _v4 = new byte[1024][];
    private readonly byte[][] _v6 = new byte[1024][];
    private int _next;

    [GlobalSetup]
    public void Setup()
    {
        var random = new Random(7);
        var owners = Enumerable.Range(0, 1000).Select(_ => new object()).ToArray();
        for (var i = 0; i < 10_000; i++)
        {
            var v6 = i % 4 == 0;
            var bytes = new byte[v6 ? 16 : 4];
            random.NextBytes(bytes);
            bytes[0] = v6 ? (byte)0xfd : (byte)100;
            _table.Insert(IPPrefix.Canonical(new IPAddress(bytes), v6 ? random.Next(48, 129) : random.Next(16, 33)), owners[i % owners.Length]);
        }

        for (var i = 0; i < 1024; i++)
        {
            _v4[i] = new byte[4];
            random.NextBytes(_v4[i]);
            _v4[i][0] = 100;
            _v6[i] = new byte[16];
            random.NextBytes(_v6[i]);
            _v6[i][0] = 0xfd;
        }
    }

    [Benchmark]
    public object? LookupIPv4() => _table.Lookup(_v4[_next++ & 1023]);

    [Benchmark]
    public object? LookupIPv6() => _table.Lookup(_v6[_next++ & 1023]);
}
