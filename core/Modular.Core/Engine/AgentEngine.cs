using System.Net;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using Grpc.Core;
using Grpc.Net.Client;
using Microsoft.Extensions.Logging;
using Modular.Abstractions.Activity;
using Modular.Abstractions.Config;
using Modular.Abstractions.Peers;
using Modular.Abstractions.Proxy;
using Modular.Abstractions.WireGuard;
using Modular.Control;
using Modular.Control.Crypto;
using Modular.Control.Management;
using Modular.Control.Signal;
using Modular.Core.Config;
using Modular.Core.Firewall;
using Modular.Core.Ice;
using Modular.Core.Lazy;
using Modular.Core.MeshDns;
using Modular.Core.Peers;
using Modular.Core.Routing;
using Modular.Core.Status;
using Modular.WireGuard.Conn;
using Modular.WireGuard.Interface;

namespace Modular.Core.Engine;

/// <summary>
/// The agent's engine: logs in to management (URLs in order, register with the setup key when the
/// key is new), creates the WireGuard interface with the assigned overlay address, keeps the signal
/// connection, applies every network map as a diff through the <see cref="ConnectionManager"/>, and
/// feeds the <see cref="StatusRecorder"/> as things happen. Management, signal and relay failures are
/// retried with jittered backoff while established tunnels stay up. The interface is always closed
/// (destroyed) when <see cref="RunAsync"/> returns.
/// </summary>
#pragma warning disable CA1001 // RunAsync creates the interface and connections and always disposes them before it returns.
public sealed class AgentEngine
#pragma warning restore CA1001
{
    private static readonly TimeSpan MaxBackoff = TimeSpan.FromSeconds(30);

    private readonly EngineOptions _options;
    private readonly AgentConfig _config;
    private readonly StatusRecorder _recorder;
    private readonly ILoggerFactory _loggerFactory;
    private readonly ILogger _logger;
    private readonly TimeProvider _time;
    private readonly X25519KeyPair _identity;
    private readonly EngineSignaling _signaling = new();
    private readonly RefusedPeerBackoff _refused;
    private readonly EngineSeams _seams;
    // All of the interface's parts or none: set once, when every one of them was built (see AssembleAsync).
    private volatile EngineParts? _parts;
    private volatile ServiceAddresses? _services;
    private volatile Uri? _managementUrl;
    // The management URL whose failure is reported (the last one LoginAsync tried), for the one-line message.
    private volatile Uri? _lastLoginUrl;
    // The key management announced (GetServerKey); signal must prove the same key, so an impersonating
    // signal server (DNS, a wrong public_url) is refused instead of trusted. Boxed for atomic publication.
    private volatile StrongBox<WgKey>? _serverKey;
    private readonly NetworkMapState _map = new();
    // Map application, route failover, switches and clearing all change peers and routes: one at a time.
    private readonly ApplyGate _applyGate = new();
    private volatile NetworkMap? _appliedMap;
    private volatile RoutePlan _routePlan = RoutePlan.Empty;
    private SignalClient? _rejectedClient;
    private int _switchesApplied;
    private long _rejectedReported;

    public AgentEngine(EngineOptions options, StatusRecorder recorder, ILoggerFactory loggerFactory, TimeProvider time)
        : this(options, recorder, loggerFactory, time, EngineSeams.Host)
    {
    }

    /// <summary>For tests: an engine whose OS is <paramref name="seams"/> (doubles for the interface, routes and nft).</summary>
    internal AgentEngine(EngineOptions options, StatusRecorder recorder, ILoggerFactory loggerFactory, TimeProvider time, EngineSeams seams)
    {
        _seams = seams;
        _options = options;
        _config = options.Config;
        _recorder = recorder;
        _loggerFactory = loggerFactory;
        _logger = loggerFactory.CreateLogger<AgentEngine>();
        _time = time;
        _identity = X25519KeyPair.FromPrivateKey(options.PrivateKey);
        _refused = new RefusedPeerBackoff(_logger, time, RegisteredMarker);
    }

    /// <summary>The connection manager once the interface exists (for tests and benchmarks).</summary>
    public ConnectionManager? Connections => _parts?.Manager;

    /// <summary>The interface once created.</summary>
    public IWgIface? Interface => _parts?.Iface;

    /// <summary>For tests: how many changes wait for the apply gate.</summary>
    internal int ApplyGateWaiting => _applyGate.Waiting;

    /// <summary>Runs until <paramref name="cancellationToken"/> fires; throws <see cref="EngineFatalException"/> when it cannot go on.</summary>
    public async Task RunAsync(CancellationToken cancellationToken)
    {
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var background = new List<Task>();
        try
        {
            var backoff = new RetryBackoff(TimeSpan.FromSeconds(1));
            var refused = _refused;
            while (!stop.IsCancellationRequested)
            {
                GrpcChannel? channel = null;
                TimeSpan? wait = null;
                try
                {
                    (channel, var management, var login) = await LoginAsync(stop.Token);
                    refused.OnAccepted();
                    await EnsureInterfaceAsync(login, stop.Token);
                    if (background.Count == 0)
                    {
                        background.Add(Task.Run(() => SignalLoopAsync(stop.Token), CancellationToken.None));
                        background.Add(Task.Run(() => StatsLoopAsync(stop.Token), CancellationToken.None));
                        background.Add(Task.Run(() => ReflexiveLoopAsync(stop.Token), CancellationToken.None));
                    }

                    backoff.Reset();
                    await SyncAsync(management, stop.Token);
                    SetManagement(false, "the network map stream ended");
                }
                catch (Exception e) when (IsOwnCancellation(e, stop.Token))
                {
                    break;
                }
                catch (EngineFatalException)
                {
                    throw;
                }
                catch (RpcException e) when (e.StatusCode is StatusCode.NotFound or StatusCode.PermissionDenied)
                {
                    // This peer was removed or expired: drop every tunnel, keep asking (an operator may re-add it),
                    // backing off to an hour and saying so at most once an hour.
                    SetManagement(false, refused.Describe(e.StatusCode, e.Status.Detail));
                    wait = refused.OnRefused(e.StatusCode, e.Status.Detail);
                    await ClearPeersAsync();
                }
#pragma warning disable CA1031 // Every other management failure is retried; the message goes to status.
                catch (Exception e)
#pragma warning restore CA1031
                {
                    var problem = ConnectionProblem.Describe(e, _lastLoginUrl);
                    SetManagement(false, problem);
                    _logger.LogWarning("Management: {Problem}; retrying in about {Seconds} s", problem, (int)backoff.Current.TotalSeconds);
                }
                finally
                {
                    channel?.Dispose();
                }

                // Doubled after a refusal too (its own wait replaces this one), as before.
                var delay = backoff.Next(MaxBackoff);
                try
                {
                    await Task.Delay(wait ?? delay, _time, stop.Token);
                }
                catch (OperationCanceledException)
                {
                    break;
                }
            }
        }
        finally
        {
            await stop.CancelAsync();
            await Task.WhenAll(background.Select(t => t.ContinueWith(_ => { }, TaskScheduler.Default)));
            await ShutdownAsync();
        }
    }

    private async Task<(GrpcChannel Channel, ManagementClient Client, LoginResponse Login)> LoginAsync(CancellationToken cancellationToken)
    {
        var meta = Meta();
        Exception? last = null;
        foreach (var url in _config.ManagementUrls)
        {
            var channel = ControlChannel.Create(url.ToString(), _config.TlsCa);
            try
            {
                var client = new ManagementClient(channel, _identity, _time);
                LoginResponse login;
                try
                {
                    login = await client.LoginAsync(meta, cancellationToken);
                }
                catch (RpcException e) when (e.StatusCode == StatusCode.PermissionDenied && _config.SetupKey.Length > 0 && !File.Exists(RegisteredMarker))
                {
                    try
                    {
                        login = await client.RegisterAsync(_config.SetupKey, meta, cancellationToken);
                        _logger.LogInformation("Registered with {Management} using the setup key", url);
                    }
                    catch (RpcException refused) when (refused.StatusCode is StatusCode.PermissionDenied or StatusCode.InvalidArgument)
                    {
                        SetManagement(false, $"setup key refused: {refused.Status.Detail}");
                        throw new EngineFatalException($"management at {url} refused the setup key: {refused.Status.Detail}", refused);
                    }
                }
                catch (RpcException e) when (e.StatusCode == StatusCode.PermissionDenied && !File.Exists(RegisteredMarker))
                {
                    SetManagement(false, $"not registered and no setup_key: {e.Status.Detail}");
                    throw new EngineFatalException($"management at {url} does not know this agent ({e.Status.Detail}) and no setup_key is configured", e);
                }

                MarkRegistered(url);
                _serverKey = new StrongBox<WgKey>(await client.GetServerKeyAsync(cancellationToken));

                _managementUrl = url;
                _services = login.Services;
                ApplyServices(_parts?.Relay, login.Services);
                _recorder.SetOverlayIp(AddressOnly(login.PeerConfig.Address));
                SetManagement(true, null);
                _logger.LogInformation("Logged in to {Management}: overlay address {Address}", url, login.PeerConfig.Address);
                return (channel, client, login);
            }
            catch (Exception e) when (e is not EngineFatalException and not OperationCanceledException)
            {
                channel.Dispose();
                last = e;
                _lastLoginUrl = url;
                _logger.LogDebug("Management {Url}: {Problem}", url, ConnectionProblem.Describe(e, url));
            }
            catch
            {
                channel.Dispose();
                throw;
            }
        }

        throw last ?? new InvalidOperationException("no management URL configured");
    }

    // Registration happens once per identity: a peer the operator removed (or whose login expired) must
    // not silently come back by re-using a reusable setup key; it keeps asking and says why in status.
    private string RegisteredMarker => Path.Combine(_config.StateDir, "registered");

    private void MarkRegistered(Uri url)
    {
        if (!File.Exists(RegisteredMarker))
        {
            Directory.CreateDirectory(_config.StateDir);
            File.WriteAllText(RegisteredMarker, $"{url}\n");
        }
    }

    private async Task SyncAsync(ManagementClient management, CancellationToken cancellationToken)
    {
        // A delta that does not follow the serial held means something was missed: start a new stream,
        // which begins with a whole map, rather than diverge silently from the server.
        while (await SyncStreamAsync(management, cancellationToken))
        {
            _logger.LogWarning("Network map delta did not follow serial {Serial}; resynchronizing", _map.Serial);
            // A pause, so a server that keeps sending broken chains cannot make the agent reconnect in a hot loop.
            await Task.Delay(RetryBackoff.Jitter(TimeSpan.FromSeconds(1)), _time, cancellationToken);
        }
    }

    /// <summary>Reads one Sync stream; true when it was abandoned for a resync, false when the server ended it.</summary>
    private async Task<bool> SyncStreamAsync(ManagementClient management, CancellationToken cancellationToken)
    {
        _map.Reset();
        await foreach (var update in management.SyncAsync(Meta(), cancellationToken))
        {
            if (update.Services is { } services)
            {
                _services = services;
                ApplyServices(_parts?.Relay, services);
            }

            SetManagement(true, null);
            var previous = _map.Serial;
            switch (_map.Apply(update))
            {
                case MapUpdateResult.ResyncNeeded:
                    return true;
                case MapUpdateResult.Ignored:
                    continue;
            }

            var started = _time.GetTimestamp();
            var map = _map.ToMap();
            var (added, updated, removed) = await ApplyMapAsync(map, cancellationToken);
            _logger.LogInformation("Network map {Serial} ({Kind} from {Previous}): {Total} peers (+{Added} ~{Updated} -{Removed}) applied in {Ms:F1} ms",
                map.Serial, update.NetworkMap is null ? "delta" : "whole map", previous, map.RemotePeers.Count, added, updated, removed, _time.GetElapsedTime(started).TotalMilliseconds);
        }

        return false;
    }

    /// <summary>Puts a whole network map in force: firewall rules, DNS, then peers and routes by a new route plan.</summary>
    internal async Task<(int Added, int Updated, int Removed)> ApplyMapAsync(NetworkMap map, CancellationToken cancellationToken)
    {
        var parts = Parts;
        using (await _applyGate.EnterAsync(cancellationToken))
        {
            var routes = RoutePlan.From(map, _identity.PublicKey, parts.Iface.Address, _logger, IsConnected);
            if (parts.Firewall is not null)
            {
                await parts.Firewall.ApplyAsync(map, cancellationToken);
            }

            await ApplyDnsAsync(parts, map, cancellationToken);
            return await ApplyRoutePlanAsync(parts, map, routes, cancellationToken);
        }
    }

    /// <summary>Management removed this agent: every tunnel goes, and the routes through them.</summary>
    internal async Task ClearPeersAsync()
    {
        await Step(EngineStep.ClearPeers, CancellationToken.None);
        if (_parts is not { } parts)
        {
            return;
        }

        // Through the gate, as every change of peers: a failover or switch in progress puts the map in force back
        // otherwise, with the peers of the agent management just removed.
        using (await _applyGate.EnterAsync(CancellationToken.None))
        {
            await parts.Manager.ApplyAsync([], CancellationToken.None);
            await parts.Routes.ApplyAsync(RoutePlan.Empty, [], CancellationToken.None);
            _recorder.SetRoutes([]);
            (_appliedMap, _routePlan) = (null, RoutePlan.Empty);
        }
    }

    /// <summary>
    /// Puts a route plan in force: the networks it routes through peers join their allowed IPs, the OS
    /// routes follow, then status (caller holds <see cref="_applyGate"/>).
    /// </summary>
    private async Task<(int Added, int Updated, int Removed)> ApplyRoutePlanAsync(EngineParts parts, NetworkMap map, RoutePlan plan, CancellationToken cancellationToken)
    {
        parts.Firewall?.Firewall?.UpdateResources(plan.ToFirewallResources(parts.Iface.Address));
        ApplyLazySetting(parts.Manager, map);
        var changes = await parts.Manager.ApplyAsync(plan.MergeAllowedIps(ToPeers(map, _logger)), cancellationToken);
        await parts.Routes.ApplyAsync(plan, ControlHosts(), cancellationToken);
        _recorder.SetRoutes(parts.Routes.Describe(plan, PeerNames(map, plan)));
        _appliedMap = map;
        _routePlan = plan;
        return changes;
    }

    /// <summary>
    /// Route failover: when a routing peer that shares a network with another one connects or drops, the
    /// routes are planned again from the map in force, so a connected routing peer carries the network.
    /// </summary>
    internal async Task FailOverRoutesAsync(CancellationToken cancellationToken)
    {
        if (_parts is not { } parts || !_routePlan.IsStale(IsConnected))
        {
            return; // the common case: nothing shared, or nothing changed
        }

        using (await _applyGate.EnterAsync(cancellationToken))
        {
            if (_appliedMap is not { } map || !_routePlan.IsStale(IsConnected))
            {
                return;
            }

            var plan = RoutePlan.From(map, _identity.PublicKey, parts.Iface.Address, null, IsConnected);
            var moved = plan.MovedFrom(_routePlan);
            var names = PeerNames(map, plan);
            if (moved.Count == 0)
            {
                _routePlan = plan; // e.g. a standby came up: remember it, nothing moves
                _recorder.SetRoutes(parts.Routes.Describe(plan, names));
                return;
            }

            foreach (var route in moved)
            {
                _logger.LogWarning("Route {Name} ({Network}) fails over to routing peer {Peer} ({State})",
                    route.Name, route.Network, names(route.Peer) ?? route.Peer.ToShortString(), IsConnected(route.Peer) ? "connected" : "none of its routing peers is connected");
            }

            await Step(EngineStep.Failover, cancellationToken);
            await ApplyRoutePlanAsync(parts, map, plan, cancellationToken);
        }
    }

    private bool IsConnected(WgKey peer)
        => _seams.IsConnected is { } isConnected ? isConnected(peer) : _parts?.Manager.Find(peer)?.State == PeerConnectionState.Connected;

    /// <summary>The parts, for work that only runs once they exist (maps come after the interface).</summary>
    private EngineParts Parts => _parts ?? throw new InvalidOperationException("the engine's interface is not built yet");

    private ValueTask Step(EngineStep step, CancellationToken cancellationToken)
        => _seams.BeforeStep is { } before ? before(step, cancellationToken) : ValueTask.CompletedTask;

    /// <summary>
    /// Resolves the features the account also sets by the one rule (<see cref="FeatureResolver"/>: a local flag,
    /// variable, UI switch or TOML key overrides the account either way) and puts lazy connections in force; status
    /// shows every feature as in effect or unavailable, with the source that decided it.
    /// </summary>
    private void ApplyLazySetting(ConnectionManager manager, NetworkMap map)
    {
        var features = _config.Features;
        var account = map.Settings is { } settings
            ? new AccountFeatures(settings.LazyConnections, settings.Flows?.Enabled ?? false, settings.Rosenpass?.Enabled ?? false, settings.Rosenpass?.Permissive)
            : AccountFeatures.None;
        var status = FeatureStatusBuilder.Build(_config, _options.Switches.LazyConnections, account);
        _recorder.UpdateFeatures(_ => status);
        var enabled = status.LazyConnections;
        if (enabled == manager.Lazy.Enabled)
        {
            return;
        }

        manager.Lazy = new LazyOptions(enabled, features.InactivityTimeout, features.AlwaysConnected);
        if (enabled)
        {
            _logger.LogInformation("Lazy connections on ({Source}): peers stay idle until traffic for them appears, and go idle after {Timeout} without",
                status.LazyConnectionsSource, ConfigDuration.Format(features.InactivityTimeout));
        }
        else
        {
            _logger.LogInformation("Lazy connections off ({Source}): every peer connects at once", status.LazyConnectionsSource);
        }
    }

    /// <summary>Puts a switch the user just changed in force: the map in force is applied again under the new setting.</summary>
    private async Task ApplySwitchesAsync(CancellationToken cancellationToken)
    {
        var version = _options.Switches.Version;
        if (version == _switchesApplied || _parts is not { } parts)
        {
            return;
        }

        using (await _applyGate.EnterAsync(cancellationToken))
        {
            if (_appliedMap is { } map)
            {
                await ApplyRoutePlanAsync(parts, map, _routePlan, cancellationToken);
                _switchesApplied = version;
            }
        }
    }

    /// <summary>The stand-in endpoint of idle peers: a claim on the in-process Bind, or one loopback socket for kernel/external WireGuard.</summary>
    private IActivityMonitor CreateActivityMonitor(IWgIface iface, IActivityListener listener)
    {
        var logger = _loggerFactory.CreateLogger("Modular.Core.Lazy.ActivityMonitor");
        return iface.BindHook is { } hook
            ? new BindHookActivityMonitor(hook, listener, logger)
            : new LoopbackActivityMonitor(listener, logger);
    }

    /// <summary>The mesh resolver follows the map (records, listener); see <see cref="OnDnsListening"/> for the firewall.</summary>
    private async Task ApplyDnsAsync(EngineParts parts, NetworkMap map, CancellationToken cancellationToken)
    {
        if (parts.Dns is { } dns)
        {
            await dns.ApplyAsync(map, cancellationToken);
            _recorder.SetDns(dns.Status());
        }
    }

    /// <summary>Names routing peers as status does for peers (fqdn, else hostname); looks up only when the plan has routes.</summary>
    private static Func<WgKey, string?> PeerNames(NetworkMap map, RoutePlan plan)
    {
        if (plan.Client.Count == 0 && plan.Unused.Count == 0)
        {
            return _ => null;
        }

        var names = new Dictionary<WgKey, string>();
        foreach (var remote in map.RemotePeers)
        {
            if (remote.WgPubKey.Length == WgKey.Size)
            {
                names.TryAdd(new WgKey(remote.WgPubKey.Span), remote.Fqdn.Length > 0 ? remote.Fqdn : remote.Hostname);
            }
        }

        return key => names.GetValueOrDefault(key);
    }

    /// <summary>While the resolver listens, every peer may reach it whatever the policies; nothing else is opened.</summary>
    private void OnDnsListening(MeshDnsService dns, EngineFirewall? firewall, IPEndPoint? listening)
    {
        firewall?.SetLocalServices(listening is null
            ? []
            : [LocalService.Udp(listening.Address, (ushort)listening.Port), LocalService.Tcp(listening.Address, (ushort)listening.Port)]);
        _recorder.SetDns(dns.Status());
    }

    /// <summary>Turns a network map into the manager's peer list; malformed entries are skipped with a warning.</summary>
    public static IReadOnlyList<RemotePeerInfo> ToPeers(NetworkMap map, ILogger? logger = null)
    {
        WgKey? psk = map.AccountPsk.Length == WgKey.Size ? new WgKey(map.AccountPsk.Span) : null;
        var peers = new List<RemotePeerInfo>(map.RemotePeers.Count);
        foreach (var remote in map.RemotePeers)
        {
            if (remote.WgPubKey.Length != WgKey.Size)
            {
                logger?.LogWarning("Skipped map entry {Name}: public key is not 32 bytes", remote.Hostname);
                continue;
            }

            var allowed = new List<IPNetwork>(remote.AllowedIps.Count);
            foreach (var text in remote.AllowedIps)
            {
                if (IPNetwork.TryParse(text, out var network))
                {
                    allowed.Add(network);
                }
                else
                {
                    logger?.LogWarning("Skipped allowed IP {Text} of {Name}: not a prefix", text, remote.Hostname);
                }
            }

            var ip = remote.AllowedIps.Count > 0 ? AddressOnly(remote.AllowedIps[0]) : "";
            var name = remote.Fqdn.Length > 0 ? remote.Fqdn : remote.Hostname;
            peers.Add(new RemotePeerInfo(new WgKey(remote.WgPubKey.Span), name, ip, allowed, psk));
        }

        return peers;
    }

    /// <summary>Builds the interface and its parts once (see <see cref="AssembleAsync"/>); later logins keep them.</summary>
    internal async Task EnsureInterfaceAsync(LoginResponse login, CancellationToken cancellationToken)
    {
        if (_parts is not null)
        {
            return;
        }

        var text = login.PeerConfig.Address;
        var slash = text.IndexOf('/', StringComparison.Ordinal);
        if (slash <= 0 || !IPAddress.TryParse(text.AsSpan(0, slash), out var address)
            || !int.TryParse(text.AsSpan(slash + 1), System.Globalization.CultureInfo.InvariantCulture, out var prefix))
        {
            throw new InvalidDataException($"management assigned a malformed overlay address: {text}");
        }

        var iface = _config.Interface;
        _parts = await AssembleAsync(new WgIfaceOptions(iface.Name, _options.PrivateKey, address, prefix, iface.Mtu, iface.Port), login.Services, cancellationToken);
    }

    /// <summary>
    /// Builds every part that needs the interface, step by step (<see cref="EngineStep"/>), into locals: when one
    /// fails or is cancelled, what was built is closed again and nothing is published, so the next login starts
    /// afresh instead of finding a half-built engine.
    /// </summary>
    private async Task<EngineParts> AssembleAsync(WgIfaceOptions ifaceOptions, ServiceAddresses? services, CancellationToken cancellationToken)
    {
        EngineInterface? created = null;
        EngineFirewall? firewall = null;
        RouteManager? routes = null;
        MeshDnsService? dns = null;
        try
        {
            await Step(EngineStep.Interface, cancellationToken);
            created = (_seams.CreateInterface ?? CreateInterface)(ifaceOptions);
            var iface = created.Iface;

            await Step(EngineStep.Firewall, cancellationToken);
            if (_config.Firewall.Enabled)
            {
                // Its own address tells the firewall which inbound packets are forwarded (routed) traffic.
                firewall = await EngineFirewall.AttachAsync(iface, _time, _loggerFactory.CreateLogger<EngineFirewall>(), _recorder, new Firewall.FirewallOptions { LocalAddresses = [ifaceOptions.Address] }, _seams.Nftables, cancellationToken);
            }
            else
            {
                _recorder.SetFirewall(FirewallStatus.Off);
                _logger.LogWarning("[firewall] enabled = false: no access policy is enforced on {Interface}; every peer reaches this host", iface.Name);
            }

            // Kernel mode's ICE socket talks to peers directly, like WireGuard's: an exit node must not carry it either.
            await Step(EngineStep.Routes, cancellationToken);
            routes = new RouteManager(
                iface,
                _seams.RouteOs ?? new HostRouteOs(),
                _seams.Nftables ?? Firewall.Nftables.HostNftables.Instance,
                _loggerFactory.CreateLogger<RouteManager>(),
                RouteManagerOptions.For(iface) with { FilterForwarded = _config.Firewall.Enabled },
                created.OwnedTransport is IceSocketTransport checks ? checks.SetMark : null);

            await Step(EngineStep.Dns, cancellationToken);
            if (_config.Dns.Enabled)
            {
                var resolver = new MeshDnsService(_config.Dns.ListenPort, _loggerFactory, _time);
                var guarded = firewall;
                resolver.ListeningChanged += listening => OnDnsListening(resolver, guarded, listening);
                dns = resolver;
            }

            await Step(EngineStep.Up, cancellationToken);
            await iface.CreateAsync(cancellationToken);
            await iface.UpAsync(cancellationToken);

            await Step(EngineStep.Connections, cancellationToken);
            var agent = new IceAgent(created.Transport, _time, _loggerFactory.CreateLogger<IceAgent>());
            var paths = new EnginePaths(agent, created.PortOffset);
            paths.LocalCandidates = CandidateGatherer.HostCandidates(agent.LocalPort, iface.Name, iface.Address);
            _logger.LogInformation("Interface {Interface} up ({Mode}); host candidates: {Candidates}", iface.Name, iface.Mode,
                string.Join(", ", paths.LocalCandidates));

            var proxies = new ProxySelector(
                _config.Proxy.Kind,
                _options.ProxyFactories,
                new ProxyEnvironment(_config.Proxy.EbpfDisabled, Environment.UserName == "root"),
                name => new EnginePluginContext(_config.SettingsFor(name), _loggerFactory, _time, _config.StateDir, _options.Services),
                _logger);
            var relay = new EngineRelayConnector(iface, _identity.PublicKey, proxies, _recorder, _logger);
            ApplyServices(relay, services);
            var manager = new ConnectionManager(iface, _signaling, paths, relay, _options.PeerOptions, _recorder, _time, _loggerFactory, listener => CreateActivityMonitor(iface, listener));
            return new EngineParts(iface, created.OwnedTransport, firewall, routes, dns, paths, relay, manager);
        }
        catch
        {
            await CloseAsync(created?.Iface, created?.OwnedTransport, firewall, routes, dns, manager: null);
            throw;
        }
    }

    /// <summary>The interface the config's mode names: in-process WireGuard with ICE on its Bind, or kernel/external with an ICE socket one port up.</summary>
    private EngineInterface CreateInterface(WgIfaceOptions options)
    {
        if (_config.Interface.Mode == WgInterfaceMode.Userspace)
        {
            var demux = new IceDemuxBind(new UdpBind());
            // `wg show` works on the in-process device; `wg set` is refused (management owns the configuration).
            return new EngineInterface(new UserspaceWgIface(options, _loggerFactory, _time, () => demux) { ReadOnlyUapiDirectory = _options.UapiDirectory }, demux, 0, null);
        }

        var kernel = new KernelWgIface(options, _loggerFactory);
        var socket = new IceSocketTransport(options.ListenPort + 1);
        return new EngineInterface(kernel, socket, 1, socket);
    }

    private static void ApplyServices(EngineRelayConnector? relay, ServiceAddresses? services)
    {
        if (services is null || relay is null)
        {
            return;
        }

        relay.Grant = new EngineRelayConnector.RelayGrant(services.RelayAddress, services.RelayToken.ToByteArray());
    }

    private async Task SignalLoopAsync(CancellationToken cancellationToken)
    {
        var backoff = new RetryBackoff(TimeSpan.FromSeconds(1));
        var refusedSignal = false;
        while (!cancellationToken.IsCancellationRequested)
        {
            var url = _services?.SignalUrl ?? "";
            if (url.Length == 0)
            {
                _recorder.SetSignal(new ServiceStatus("", false, "management announced no signal service"));
                await DelayAsync(TimeSpan.FromSeconds(2), cancellationToken);
                continue;
            }

            try
            {
                using var channel = ControlChannel.Create(url, _config.TlsCa);
                await using var client = await SignalClient.ConnectAsync(channel, _identity, cancellationToken, expectedServerKey: _serverKey?.Value, time: _time);
                _signaling.Client = client;
                _recorder.SetSignal(new ServiceStatus(url, true, null));
                _logger.LogInformation("Connected to signal {Signal}", url);
                backoff.Reset();
                try
                {
                    await foreach (var inbound in client.Inbound.ReadAllAsync(cancellationToken))
                    {
                        try
                        {
                            await Parts.Manager.OnSignalAsync(inbound, cancellationToken);
                        }
                        catch (Exception e) when (e is not OperationCanceledException)
                        {
                            _logger.LogWarning("Signal message from {Peer} not handled: {Problem}", inbound.Peer.ToShortString(), Describe(e));
                        }
                    }
                }
                catch (Exception e) when (IsOwnCancellation(e, cancellationToken) && _parts?.Manager is { } manager)
                {
                    // Stopping: while signal is still up, peers learn it now (their routes fail over at once).
                    await manager.SayGoodbyeAsync(_signaling, TimeSpan.FromSeconds(2));
                    throw;
                }

                _signaling.Client = null;
                _recorder.SetSignal(new ServiceStatus(url, false, "the signal stream ended"));
            }
            catch (Exception e) when (IsOwnCancellation(e, cancellationToken))
            {
                break;
            }
#pragma warning disable CA1031 // Signal failures are retried; the message goes to status.
            catch (Exception e)
#pragma warning restore CA1031
            {
                _signaling.Client = null;
                var problem = ConnectionProblem.Describe(e, Uri.TryCreate(url, UriKind.Absolute, out var target) ? target : null);
                _recorder.SetSignal(new ServiceStatus(url, false, problem));
                if (_refused.IsRefused && e is RpcException { StatusCode: StatusCode.PermissionDenied or StatusCode.NotFound })
                {
                    // Management already said (once an hour) that this peer was removed; signal agrees, quietly.
                    _logger.LogDebug("Signal {Signal}: {Problem}; this peer is refused, retrying with backoff", url, problem);
                    refusedSignal = true;
                }
                else
                {
                    _logger.LogWarning("Signal {Signal}: {Problem}; retrying", url, problem);
                }
            }

            var delay = backoff.Next(cap: refusedSignal ? RefusedPeerBackoff.MaxDelay : MaxBackoff);
            refusedSignal = false;
            await DelayAsync(delay, cancellationToken);
        }

        _signaling.Client = null;
    }

    /// <summary>Logs signal messages the client dropped (forged, tampered, undecodable) since the last report.</summary>
    private void ReportRejectedSignal()
    {
        var client = _signaling.Client;
        if (client is null)
        {
            return;
        }

        lock (_signaling)
        {
            if (!ReferenceEquals(client, _rejectedClient))
            {
                _rejectedClient = client;
                _rejectedReported = 0;
            }

            var rejected = client.RejectedCount;
            if (rejected > _rejectedReported)
            {
                _logger.LogWarning("Signal: dropped {Count} message(s) that failed verification (forged, tampered or undecodable)", rejected - _rejectedReported);
                _rejectedReported = rejected;
            }
        }
    }

    private async Task StatsLoopAsync(CancellationToken cancellationToken)
    {
        while (!cancellationToken.IsCancellationRequested)
        {
            await DelayAsync(_options.StatsInterval, cancellationToken);
            if (_parts is not { } parts || cancellationToken.IsCancellationRequested)
            {
                continue;
            }

            ReportRejectedSignal();
            if (parts.Dns is { } dns)
            {
                _recorder.SetDns(dns.Status());
            }

            try
            {
                parts.Manager.OnStats(await parts.Iface.GetStatsAsync(cancellationToken));
            }
            catch (Exception e) when (e is IOException or InvalidOperationException or TimeoutException)
            {
                _logger.LogDebug("Reading interface counters failed: {Problem}", e.Message);
            }

            try
            {
                await ApplySwitchesAsync(cancellationToken);
                await parts.Manager.IdleInactiveAsync(cancellationToken);
            }
            catch (Exception e) when (e is IOException or InvalidOperationException)
            {
                _logger.LogWarning("Parking inactive peers failed: {Problem}", e.Message);
            }

            try
            {
                await FailOverRoutesAsync(cancellationToken);
            }
            catch (Exception e) when (e is IOException or InvalidOperationException)
            {
                _logger.LogWarning("Route failover failed: {Problem}", e.Message);
            }
        }
    }

    /// <summary>Learns (and refreshes) the server-reflexive candidate from the STUN server over the ICE port.</summary>
    private async Task ReflexiveLoopAsync(CancellationToken cancellationToken)
    {
        while (!cancellationToken.IsCancellationRequested)
        {
            var stun = _services?.StunAddress ?? "";
            if (stun.Length > 0 && _parts is { } parts)
            {
                try
                {
                    var server = await EngineRelayConnector.ResolveAsync(stun, cancellationToken);
                    var mapped = await parts.Paths.Agent.QueryStunAsync(server, TimeSpan.FromSeconds(3), cancellationToken);
                    var hosts = CandidateGatherer.HostCandidates(parts.Paths.Agent.LocalPort, parts.Iface.Name, parts.Iface.Address);
                    var candidates = new List<IceCandidate>(hosts);
                    if (mapped is not null && !hosts.Any(h => h.Endpoint.Equals(mapped)))
                    {
                        candidates.Add(new IceCandidate(CandidateType.ServerReflexive, mapped));
                    }

                    parts.Paths.LocalCandidates = candidates;
                }
                catch (Exception e) when (e is SocketException or InvalidDataException)
                {
                    _logger.LogDebug("STUN {Stun}: {Problem}", stun, e.Message);
                }
            }

            await DelayAsync(_parts?.Paths.LocalCandidates.Any(c => c.Type == CandidateType.ServerReflexive) == true ? TimeSpan.FromSeconds(60) : TimeSpan.FromSeconds(5), cancellationToken);
        }
    }

    /// <summary>Closes whatever exists: DNS, routes, connections, the interface, the firewall (RunAsync does this when it returns).</summary>
    internal async Task ShutdownAsync()
    {
        if (_parts is { } parts)
        {
            await CloseAsync(parts.Iface, parts.IceTransport, parts.Firewall, parts.Routes, parts.Dns, parts.Manager);
        }

        _identity.Dispose();
        _recorder.SetManagement(new ServiceStatus(_managementUrl?.ToString() ?? "", false, "stopped"));
        _recorder.SetSignal(new ServiceStatus(_services?.SignalUrl ?? "", false, "stopped"));
    }

    /// <summary>Closes the parts that exist, in an order that leaves nothing behind: routes before the interface, the firewall after it.</summary>
    private async Task CloseAsync(IWgIface? iface, IDisposable? iceTransport, EngineFirewall? firewall, RouteManager? routes, MeshDnsService? dns, ConnectionManager? manager)
    {
        if (dns is not null)
        {
            await dns.DisposeAsync();
            _recorder.SetDns(dns.Status());
        }

        if (routes is not null)
        {
            // Before the interface goes: rules and the forwarding table outlive it otherwise.
            await routes.CleanupAsync(CancellationToken.None);
            _recorder.SetRoutes([]);
        }

        if (manager is not null)
        {
            await manager.DisposeAsync();
        }

        if (iface is not null)
        {
            try
            {
                await iface.CloseAsync(CancellationToken.None);
                _logger.LogInformation("Interface {Interface} closed", iface.Name);
            }
#pragma warning disable CA1031 // Closing must go on to the rest whatever fails here.
            catch (Exception e)
#pragma warning restore CA1031
            {
                _logger.LogError(e, "Closing interface {Interface} failed", iface.Name);
            }

            await iface.DisposeAsync();
        }

        if (firewall is not null)
        {
            await firewall.DisposeAsync();
        }

        iceTransport?.Dispose();
    }

    private PeerMeta Meta()
    {
        var meta = new PeerMeta { Hostname = _options.Hostname, AgentVersion = _options.AgentVersion, Os = "linux", Kernel = Environment.OSVersion.VersionString };
        if (_config.Connection.ForceRelay)
        {
            meta.Features.Add("force_relay");
        }

        return meta;
    }

    private void SetManagement(bool connected, string? error)
        => _recorder.SetManagement(new ServiceStatus((_managementUrl ?? (_config.ManagementUrls.Count > 0 ? _config.ManagementUrls[0] : null))?.ToString() ?? "", connected, error));

    private async Task DelayAsync(TimeSpan delay, CancellationToken cancellationToken)
    {
        try
        {
            await Task.Delay(delay, _time, cancellationToken);
        }
        catch (OperationCanceledException)
        {
        }
    }

    /// <summary>The control plane's hosts (management, signal, relay, STUN): an exit node must not carry their traffic.</summary>
    private List<string> ControlHosts()
    {
        var hosts = new List<string>();
        if (_managementUrl is { } management)
        {
            hosts.Add(management.IdnHost);
        }

        var services = _services;
        if (services is not null)
        {
            if (Uri.TryCreate(services.SignalUrl, UriKind.Absolute, out var signal))
            {
                hosts.Add(signal.IdnHost);
            }

            hosts.Add(HostOf(services.RelayAddress));
            hosts.Add(HostOf(services.StunAddress));
        }

        return hosts;
    }

    /// <summary>"host:port" or "[v6]:port" to the host.</summary>
    private static string HostOf(string hostAndPort)
    {
        if (hostAndPort.StartsWith('['))
        {
            var close = hostAndPort.IndexOf(']', StringComparison.Ordinal);
            return close > 0 ? hostAndPort[1..close] : "";
        }

        var colon = hostAndPort.LastIndexOf(':');
        return colon > 0 ? hostAndPort[..colon] : hostAndPort;
    }

    private static string AddressOnly(string prefixText)
    {
        var slash = prefixText.IndexOf('/', StringComparison.Ordinal);
        return slash > 0 ? prefixText[..slash] : prefixText;
    }

    private static string Describe(Exception e) => e switch
    {
        RpcException rpc => $"{rpc.StatusCode}: {rpc.Status.Detail}",
        _ => e.Message,
    };

    /// <summary>
    /// The failure is our own stop: a cancelled gRPC call surfaces as RpcException(Cancelled, "Call canceled
    /// by the client") rather than OperationCanceledException. Neither a warning nor retried.
    /// </summary>
    internal static bool IsOwnCancellation(Exception e, CancellationToken stopping)
        => stopping.IsCancellationRequested && e is OperationCanceledException or RpcException { StatusCode: StatusCode.Cancelled };

}
