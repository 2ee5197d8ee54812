using System.Net;
using Microsoft.Extensions.Logging;
using Modular.Abstractions.Proxy;
using Modular.Abstractions.WireGuard;
using Modular.Control.Relay;
using Modular.Control.Signal;
using Modular.Core.Firewall.Nftables;
using Modular.Core.Ice;
using Modular.Core.MeshDns;
using Modular.Core.Peers;
using Modular.Core.Routing;
using Modular.Core.Status;
using Modular.WireGuard.Interface;

namespace Modular.Core.Engine;

/// <summary>The steps that build the engine's interface-dependent parts, in order, and the points where peers change.</summary>
internal enum EngineStep
{
    /// <summary>The WireGuard interface object and the ICE transport beside it.</summary>
    Interface,

    /// <summary>The access-policy firewall (before the OS interface exists).</summary>
    Firewall,

    /// <summary>The route manager.</summary>
    Routes,

    /// <summary>The mesh DNS resolver.</summary>
    Dns,

    /// <summary>Creating the OS interface and setting it up.</summary>
    Up,

    /// <summary>Paths, relay and the connection manager.</summary>
    Connections,

    /// <summary>Route failover holds the apply gate and is about to put its new plan in force.</summary>
    Failover,

    /// <summary>Management removed this agent: its peers and routes are about to be cleared.</summary>
    ClearPeers,
}

/// <summary>
/// Every part of the engine that needs the interface, built all at once (<c>AgentEngine.AssembleAsync</c>) and
/// published as one reference: the engine has all of them or none, never some.
/// </summary>
/// <param name="IceTransport">The ICE socket the engine closes with the interface (kernel mode); null when the interface owns it.</param>
/// <param name="Firewall">Null when the config turns the firewall off.</param>
/// <param name="Dns">Null when the config turns the mesh resolver off.</param>
internal sealed record EngineParts(
    IWgIface Iface,
    IDisposable? IceTransport,
    EngineFirewall? Firewall,
    RouteManager Routes,
    MeshDnsService? Dns,
    EnginePaths Paths,
    EngineRelayConnector Relay,
    ConnectionManager Manager);

/// <summary>A WireGuard interface with the transport ICE checks use beside it.</summary>
/// <param name="Transport">Where ICE checks go (the in-process Bind's demux, or a socket of its own).</param>
/// <param name="PortOffset">How far ICE's port is above WireGuard's (1 when ICE has its own socket).</param>
/// <param name="OwnedTransport">A socket the engine must close with the interface; null when the interface owns it.</param>
internal sealed record EngineInterface(IWgIface Iface, IIceTransport Transport, int PortOffset, IDisposable? OwnedTransport);

/// <summary>
/// Where the engine meets the OS, and named points in its work: the agent uses the defaults, tests replace them
/// with doubles to build an engine without a TUN device, routes or nft, and to fail or hold it at a step.
/// </summary>
internal sealed class EngineSeams
{
    /// <summary>The host's OS: the interface the config names, the host's routes and nft.</summary>
    public static EngineSeams Host { get; } = new();

    /// <summary>Creates the interface for the assigned address; null creates the one the config's mode names.</summary>
    public Func<WgIfaceOptions, EngineInterface>? CreateInterface { get; init; }

    /// <summary>The routing table and rules; null is the host's.</summary>
    public IRouteOs? RouteOs { get; init; }

    /// <summary>nftables for the firewall (kernel mode) and the forwarding table; null is the host's.</summary>
    public INftables? Nftables { get; init; }

    /// <summary>Runs before each <see cref="EngineStep"/>; a test throws to fail the engine there, or waits to hold it.</summary>
    public Func<EngineStep, CancellationToken, ValueTask>? BeforeStep { get; init; }

    /// <summary>Whether a peer is connected, as route failover reads it; null reads the connections.</summary>
    public Func<WgKey, bool>? IsConnected { get; init; }
}

/// <summary>
/// The engine's apply gate: map application, route failover, switches and clearing change peers and routes one at a
/// time. Counts who waits, so a test can tell that a change is queued behind the one in progress.
/// </summary>
#pragma warning disable CA1001 // The semaphore never creates a wait handle (only WaitAsync is used): nothing to dispose.
internal sealed class ApplyGate
#pragma warning restore CA1001
{
    private readonly SemaphoreSlim _gate = new(1, 1);
    private int _waiting;

    /// <summary>How many callers wait to enter.</summary>
    public int Waiting => Volatile.Read(ref _waiting);

    /// <summary>Enters the gate; dispose the result to leave it.</summary>
    public async Task<Entered> EnterAsync(CancellationToken cancellationToken)
    {
        Interlocked.Increment(ref _waiting);
        try
        {
            await _gate.WaitAsync(cancellationToken);
        }
        finally
        {
            Interlocked.Decrement(ref _waiting);
        }

        return new Entered(_gate);
    }

    /// <summary>Held while inside the gate.</summary>
    internal readonly struct Entered(SemaphoreSlim gate) : IDisposable
    {
        public void Dispose() => gate.Release();
    }
}

/// <summary>Signal as peer connections use it: the engine swaps the client on every reconnect.</summary>
internal sealed class EngineSignaling : IPeerSignaling
{
    private volatile SignalClient? _client;

    public SignalClient? Client
    {
        get => _client;
        set => _client = value;
    }

    public Task SendAsync(WgKey recipient, SignalBody body, CancellationToken cancellationToken)
        => (_client ?? throw new InvalidOperationException("not connected to signal")).SendAsync(recipient, body, cancellationToken);
}

/// <summary>The engine's <see cref="IPeerPaths"/>: an <see cref="IceAgent"/> plus the candidates gathered for it.</summary>
internal sealed class EnginePaths(IceAgent agent, int wireGuardPortOffset) : IPeerPaths
{
    private volatile IReadOnlyList<IceCandidate> _candidates = [];

    public IReadOnlyList<IceCandidate> LocalCandidates
    {
        get => _candidates;
        set => _candidates = value;
    }

    public IceAgent Agent => agent;

    public IDisposable Register(IceCredentials local, Action<IPEndPoint, string> onValidCheck) => agent.Register(local, onValidCheck);

    public Task<CheckResult?> CheckAsync(IPEndPoint remote, IceCredentials local, IceCredentials remoteCredentials, TimeSpan timeout, TimeSpan interval, CancellationToken cancellationToken)
        => agent.CheckAsync(remote, local, remoteCredentials, timeout, interval, cancellationToken);

    // Kernel mode checks run on WireGuard's port + 1 (see IceSocketTransport): WireGuard itself is one port below.
    public IPEndPoint WireGuardEndpointFor(IPEndPoint checkedRemote)
        => wireGuardPortOffset == 0 ? checkedRemote : new IPEndPoint(checkedRemote.Address, checkedRemote.Port - wireGuardPortOffset);
}

/// <summary>Relay binding with the latest management-issued token, joined to WireGuard by the selected proxy.</summary>
internal sealed class EngineRelayConnector(IWgIface iface, WgKey ownKey, ProxySelector proxies, StatusRecorder recorder, ILogger logger) : IRelayConnector
{
    private volatile RelayGrant? _grant;

    public sealed record RelayGrant(string Address, byte[] Token);

    public RelayGrant? Grant
    {
        get => _grant;
        set => _grant = value;
    }

    public async Task<RelayedPath> ConnectAsync(WgKey remotePeer, CancellationToken cancellationToken)
    {
        var grant = _grant;
        if (grant is null || grant.Address.Length == 0 || grant.Token.Length != RelayToken.Size)
        {
            throw new InvalidOperationException("no direct path and the server announced no relay");
        }

        RelayedConnection? connection = null;
        try
        {
            var relay = await ResolveAsync(grant.Address, cancellationToken);
            connection = await RelayClient.ConnectAsync(relay, ownKey, remotePeer, grant.Token, cancellationToken);
            recorder.SetRelay(new ServiceStatus(grant.Address, true, null));
            var proxy = await proxies.CreateAsync(iface, cancellationToken);
            try
            {
                await proxy.AddRelayedConnAsync(connection, remotePeer, cancellationToken);
            }
            catch
            {
                await proxy.DisposeAsync();
                throw;
            }

            var paired = connection;
            connection = null; // the proxy owns it now
            return new RelayedPath(proxy, grant.Address, () => paired.IsPaired);
        }
        catch (Exception e) when (e is TimeoutException or UnauthorizedAccessException or System.Net.Sockets.SocketException)
        {
            recorder.SetRelay(new ServiceStatus(grant.Address, false, e.Message));
            logger.LogWarning("Relay {Relay}: {Problem}", grant.Address, e.Message);
            throw new InvalidOperationException($"relay {grant.Address}: {e.Message}", e);
        }
        finally
        {
            if (connection is not null)
            {
                await connection.DisposeAsync();
            }
        }
    }

    internal static async Task<IPEndPoint> ResolveAsync(string hostPort, CancellationToken cancellationToken)
    {
        if (IPEndPoint.TryParse(hostPort, out var endpoint) && endpoint.Port != 0)
        {
            return endpoint;
        }

        var colon = hostPort.LastIndexOf(':');
        if (colon <= 0 || !int.TryParse(hostPort.AsSpan(colon + 1), System.Globalization.CultureInfo.InvariantCulture, out var port))
        {
            throw new InvalidDataException($"not a host:port address: {hostPort}");
        }

        var addresses = await Dns.GetHostAddressesAsync(hostPort[..colon], System.Net.Sockets.AddressFamily.InterNetwork, cancellationToken);
        return addresses.Length > 0 ? new IPEndPoint(addresses[0], port) : throw new InvalidDataException($"{hostPort} does not resolve");
    }
}
