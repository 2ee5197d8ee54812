using System.Collections.Concurrent;
using System.Net;
using System.Threading.Channels;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Modular.Abstractions.Plugins;
using Modular.Abstractions.Proxy;
using Modular.Abstractions.WireGuard;
using Modular.Testing;

namespace Modular.Composition.Tests;

/// <summary>A relayed connection in memory: the test plays the relay's far side.</summary>
internal sealed class InMemoryRelayedConnection : IRelayedConnection
{
    private int _receiveCalls;
    private int _taken;

    /// <summary>Datagrams "arriving from the relay"; complete the writer to close the connection.</summary>
    public Channel<byte[]> FromRelay { get; } = Channel.CreateUnbounded<byte[]>();

    /// <summary>Datagrams the proxy sent to the relay.</summary>
    public Channel<byte[]> ToRelay { get; } = Channel.CreateUnbounded<byte[]>();

    public string RelayAddress => "rels://relay.test:443";

    public bool Disposed { get; private set; }

    /// <summary>How many times the proxy asked for a datagram (the call in progress included).</summary>
    public int ReceiveCalls => Volatile.Read(ref _receiveCalls);

    /// <summary>
    /// Waits until the proxy took <paramref name="count"/> datagrams in all and finished with the
    /// last one: its one receive loop has asked for the next.
    /// </summary>
    public Task WaitConsumedAsync(int count)
        => Bounded.UntilAsync(() => Volatile.Read(ref _taken) >= count && ReceiveCalls > count, $"the proxy to consume {count} datagrams");

    public async ValueTask<int> ReceiveAsync(Memory<byte> buffer, CancellationToken cancellationToken)
    {
        Interlocked.Increment(ref _receiveCalls);
        if (!await FromRelay.Reader.WaitToReadAsync(cancellationToken) || !FromRelay.Reader.TryRead(out var datagram))
        {
            return 0;
        }

        datagram.CopyTo(buffer);
        Interlocked.Increment(ref _taken);
        return datagram.Length;
    }

    public ValueTask SendAsync(ReadOnlyMemory<byte> datagram, CancellationToken cancellationToken)
    {
        ToRelay.Writer.TryWrite(datagram.ToArray());
        return ValueTask.CompletedTask;
    }

    public ValueTask DisposeAsync()
    {
        Disposed = true;
        FromRelay.Writer.TryComplete();
        return ValueTask.CompletedTask;
    }
}

/// <summary>Stands in for the in-process WireGuard's Bind hook.</summary>
internal sealed class FakeBindHook : IWgBindHook
{
    public ConcurrentDictionary<IPEndPoint, IDatagramSink> Claims { get; } = new();

    public Channel<(byte[] Datagram, IPEndPoint From)> Injected { get; } = Channel.CreateUnbounded<(byte[], IPEndPoint)>();

    public IDisposable ClaimEndpoint(IPEndPoint endpoint, IDatagramSink sink)
    {
        if (!Claims.TryAdd(endpoint, sink))
        {
            throw new InvalidOperationException($"{endpoint} already claimed");
        }

        return new Release(() => Claims.TryRemove(endpoint, out _));
    }

    public void Inject(ReadOnlySpan<byte> datagram, IPEndPoint from) => Injected.Writer.TryWrite((datagram.ToArray(), from));

    private sealed class Release(Action action) : IDisposable
    {
        public void Dispose() => action();
    }
}

/// <summary>The narrow view a proxy factory receives, and nothing else.</summary>
internal sealed record FakeWgInterfaceView(WgInterfaceMode Mode, int ListenPort = 51820, IWgBindHook? BindHook = null) : IWgInterfaceView
{
    public string Name => "mdltest0";
}

/// <summary>A whole interface, as the host passes it to a factory built against contract 0.x.</summary>
internal sealed class FakeWgIface(WgInterfaceMode mode, int listenPort = 51820, IWgBindHook? bindHook = null) : IWgIface
{
    public string Name => "mdltest0";

    public WgInterfaceMode Mode => mode;

    public IPNetwork Address => IPNetwork.Parse("100.64.0.1/10");

    public IPAddress OverlayIp => IPAddress.Parse("100.64.0.1");

    public int Mtu => 1280;

    public int ListenPort => listenPort;

    public WgKey PublicKey => default;

    public IWgBindHook? BindHook => bindHook;

    public ValueTask CreateAsync(CancellationToken cancellationToken) => ValueTask.CompletedTask;

    public ValueTask UpAsync(CancellationToken cancellationToken) => ValueTask.CompletedTask;

    public ValueTask CloseAsync(CancellationToken cancellationToken) => ValueTask.CompletedTask;

    public ValueTask SetPeerAsync(WgPeerConfig peer, CancellationToken cancellationToken) => ValueTask.CompletedTask;

    public ValueTask RemovePeerAsync(WgKey publicKey, CancellationToken cancellationToken) => ValueTask.CompletedTask;

    public ValueTask UpdateEndpointAsync(WgKey publicKey, IPEndPoint endpoint, CancellationToken cancellationToken) => ValueTask.CompletedTask;

    public ValueTask SetFwmarkAsync(uint mark, CancellationToken cancellationToken) => ValueTask.CompletedTask;

    public ValueTask<IReadOnlyDictionary<WgKey, WgPeerStats>> GetStatsAsync(CancellationToken cancellationToken)
        => ValueTask.FromResult<IReadOnlyDictionary<WgKey, WgPeerStats>>(new Dictionary<WgKey, WgPeerStats>());

    public ValueTask DisposeAsync() => ValueTask.CompletedTask;
}

internal sealed class FakePluginContext(
    IReadOnlyDictionary<string, object?>? settings = null, TimeProvider? time = null, Abstractions.Flows.IFlowUploader? flowUploader = null) : IPluginContext
{
    public IReadOnlyDictionary<string, object?> Settings { get; } = settings ?? new Dictionary<string, object?>();

    public ILoggerFactory LoggerFactory => NullLoggerFactory.Instance;

    public TimeProvider Time => time ?? TimeProvider.System;

    public Abstractions.Flows.IFlowUploader? FlowUploader => flowUploader;

    public string StateDirectory => Path.GetTempPath();

    [Obsolete("Contract 0.x member; still implemented because the interface has it.")]
    public IServiceProvider Services => EmptyServices.Instance;

    private sealed class EmptyServices : IServiceProvider
    {
        public static readonly EmptyServices Instance = new();

        public object? GetService(Type serviceType) => null;
    }
}

internal static class Bounded
{
    /// <summary>A generous bound on waiting for something that should happen at once; never a timing assertion.</summary>
    public static CancellationToken Wait => new CancellationTokenSource(TimeSpan.FromSeconds(15)).Token;

    public static async Task UntilAsync(Func<bool> condition, string what)
    {
        var token = Wait;
        while (!condition())
        {
            if (token.IsCancellationRequested)
            {
                throw new TimeoutException($"gave up waiting for {what}");
            }

            await Task.Delay(5, CancellationToken.None);
        }
    }
}
