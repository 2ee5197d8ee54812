using System.Collections.Concurrent;
using System.Net;
using Microsoft.Extensions.Logging;
using Modular.Abstractions.Activity;
using Modular.Abstractions.WireGuard;

namespace Modular.Core.Tests.Lazy;

/// <summary>Records every reported datagram (copied: the span is only valid during the call); can be told to throw.</summary>
internal sealed class RecordingActivityListener : IActivityListener
{
    private readonly BlockingCollection<(WgKey Peer, byte[] Datagram)> _reports = [];

    public volatile bool Throw;

    public int Calls => _calls;

    private int _calls;

    public void OnPeerActivity(WgKey peer, ReadOnlySpan<byte> firstPacket)
    {
        Interlocked.Increment(ref _calls);
        if (Throw)
        {
            throw new InvalidOperationException("listener failure for the test");
        }

        _reports.Add((peer, firstPacket.ToArray()));
    }

    /// <summary>The next report, or null when none comes within <paramref name="timeout"/>.</summary>
    public (WgKey Peer, byte[] Datagram)? Next(TimeSpan timeout) => _reports.TryTake(out var report, timeout) ? report : null;

    /// <summary>Takes the next report and checks it is <paramref name="datagram"/> (byte for byte) for <paramref name="peer"/>.</summary>
    public void AssertNext(WgKey peer, byte[] datagram, TimeSpan timeout)
    {
        var report = Next(timeout);
        Assert.True(report.HasValue, "no report");
        Assert.Equal(peer, report.Value.Peer);
        Assert.Equal(datagram, report.Value.Datagram);
    }

    /// <summary>Reports that arrived and were not taken yet.</summary>
    public int Pending => _reports.Count;
}

/// <summary>A Bind hook that only records claims: tests play WireGuard by calling the claimed sinks.</summary>
internal sealed class RecordingBindHook : IWgBindHook
{
    private readonly ConcurrentDictionary<IPEndPoint, IDatagramSink> _claims = new();

    /// <summary>Every sink ever handed over, including released ones (a send racing with a release still reaches them).</summary>
    public ConcurrentDictionary<IPEndPoint, IDatagramSink> EverClaimed { get; } = new();

    /// <summary>Endpoints a test pretends someone else holds.</summary>
    public HashSet<IPEndPoint> Taken { get; } = [];

    public IReadOnlyCollection<IPEndPoint> Claimed => _claims.Keys.ToList();

    public IDisposable ClaimEndpoint(IPEndPoint endpoint, IDatagramSink sink)
    {
        if (Taken.Contains(endpoint) || !_claims.TryAdd(endpoint, sink))
        {
            throw new InvalidOperationException($"Endpoint {endpoint} is already claimed.");
        }

        EverClaimed[endpoint] = sink;
        return new Release(() => _claims.TryRemove(endpoint, out _));
    }

    public void Inject(ReadOnlySpan<byte> datagram, IPEndPoint from) => throw new NotSupportedException();

    /// <summary>What WireGuard's send path does: hands the datagram to the claimed sink; false when unclaimed.</summary>
    public bool SendTo(IPEndPoint endpoint, ReadOnlySpan<byte> datagram)
    {
        if (!_claims.TryGetValue(endpoint, out var sink))
        {
            return false;
        }

        sink.Send(datagram);
        return true;
    }

    private sealed class Release(Action action) : IDisposable
    {
        public void Dispose() => action();
    }
}

/// <summary>Keeps log entries so tests can count them.</summary>
internal sealed class CountingLogger : ILogger
{
    private int _errors;
    private int _warnings;

    public int Errors => Volatile.Read(ref _errors);

    public int Warnings => Volatile.Read(ref _warnings);

    public IDisposable? BeginScope<TState>(TState state)
        where TState : notnull => null;

    public bool IsEnabled(LogLevel logLevel) => true;

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
    {
        if (logLevel >= LogLevel.Error)
        {
            Interlocked.Increment(ref _errors);
        }
        else if (logLevel == LogLevel.Warning)
        {
            Interlocked.Increment(ref _warnings);
        }
    }
}

internal static class TestKeys
{
    /// <summary>A distinct public key per number (the monitors never check keys).</summary>
    public static WgKey Peer(int n)
    {
        var bytes = new byte[WgKey.Size];
        BitConverter.TryWriteBytes(bytes, n);
        bytes[31] = 0x42;
        return new WgKey(bytes);
    }

    /// <summary>A handshake initiation's size and first byte; the rest is a recognisable pattern.</summary>
    public static byte[] Initiation(byte marker)
    {
        var datagram = new byte[148];
        datagram.AsSpan().Fill(marker);
        datagram[0] = 1;
        datagram[1] = datagram[2] = datagram[3] = 0;
        return datagram;
    }
}
