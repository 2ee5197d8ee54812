using System.Net;
using Microsoft.Extensions.Logging;
using Modular.Abstractions.Flows;
using Modular.Abstractions.Proxy;
using Modular.Abstractions.WireGuard;
using Modular.Control.Crypto;
using Modular.Control.Management;
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
/// Builds every part of the engine that needs the interface (<see cref="EngineParts"/>), in the named steps of
/// <see cref="Steps"/>, into locals: when one fails or is cancelled, what was built is closed again and nothing is
/// returned, so the engine has all of its parts or none and the next login starts afresh. Also closes a whole set of
/// parts in the order that leaves nothing behind. Holds no mutable state: every call works on its own locals.
/// </summary>
internal sealed class EngineAssembly
{
    /// <summary>The steps <see cref="BuildAsync"/> takes, in order (each a point where <see cref="EngineSeams.BeforeStep"/> runs).</summary>
    public static readonly IReadOnlyList<EngineStep> Steps = [EngineStep.Interface, EngineStep.Firewall, EngineStep.Routes, EngineStep.Dns, EngineStep.Up, EngineStep.Connections];

    private readonly EngineOptions _options;
    private readonly AgentConfig _config;
    private readonly X25519KeyPair _identity;
    private readonly EngineSignaling _signaling;
    private readonly StatusRecorder _recorder;
    private readonly ILoggerFactory _loggerFactory;
    private readonly ILogger _logger;
    private readonly TimeProvider _time;
    private readonly EngineSeams _seams;
    private readonly IFlowSink? _flowSink;
    private readonly IFlowUploader? _flowUploader;

    /// <param name="flowSink">What the userspace firewall reports flows to (the engine's <see cref="FlowSwitch.Sink"/>, which it owns).</param>
    /// <param name="flowUploader">Handed to every plugin's context (<see cref="EnginePluginContext.FlowUploader"/>).</param>
    public EngineAssembly(EngineOptions options, X25519KeyPair identity, EngineSignaling signaling, StatusRecorder recorder, ILoggerFactory loggerFactory, ILogger logger, TimeProvider time, EngineSeams seams, IFlowSink? flowSink = null, IFlowUploader? flowUploader = null)
    {
        _flowSink = flowSink;
        _flowUploader = flowUploader;
        _options = options;
        _config = options.Config;
        _identity = identity;
        _signaling = signaling;
        _recorder = recorder;
        _loggerFactory = loggerFactory;
        _logger = logger;
        _time = time;
        _seams = seams;
    }

    /// <summary>The Rosenpass key directory the PSK provider's context carries (null: none, as in tests without management).</summary>
    public Modular.Abstractions.Security.IRosenpassKeyDirectory? RosenpassKeys { get; init; }

    /// <summary>Builds the parts for the overlay address management assigned in <paramref name="login"/>.</summary>
    public Task<EngineParts> BuildAsync(LoginResponse login, CancellationToken cancellationToken)
    {
        var text = login.PeerConfig.Address;
        var slash = text.IndexOf('/', StringComparison.Ordinal);
        if (slash <= 0 || !IPAddress.TryParse(text.AsSpan(0, slash), out var address)
            || !int.TryParse(text.AsSpan(slash + 1), System.Globalization.CultureInfo.InvariantCulture, out var prefix))
        {
            throw new InvalidDataException($"management assigned a malformed overlay address: {text}");
        }

        var iface = _config.Interface;
        return BuildAsync(new WgIfaceOptions(iface.Name, _options.PrivateKey, address, prefix, iface.Mtu, iface.Port), login.Services, cancellationToken);
    }

    /// <summary>
    /// Builds every part that needs the interface, step by step (<see cref="EngineStep"/>), into locals: when one
    /// fails or is cancelled, what was built is closed again and nothing is published, so the next login starts
    /// afresh instead of finding a half-built engine.
    /// </summary>
    private async Task<EngineParts> BuildAsync(WgIfaceOptions ifaceOptions, ServiceAddresses? services, CancellationToken cancellationToken)
    {
        EngineInterface? created = null;
        EngineFirewall? firewall = null;
        RouteManager? routes = null;
        MeshDnsService? dns = null;
        ProxySelector? proxies = null;
        try
        {
            await _seams.BeforeAsync(EngineStep.Interface, cancellationToken);
            created = (_seams.CreateInterface ?? CreateInterface)(ifaceOptions);
            var iface = created.Iface;

            await _seams.BeforeAsync(EngineStep.Firewall, cancellationToken);
            if (_config.Firewall.Enabled)
            {
                // Its own address tells the firewall which inbound packets are forwarded (routed) traffic. The flow sink is
                // the engine's switch, reporting only while flow logging is on (the engine owns and closes it). Switched off
                // locally, the account cannot turn it on: no sink, so kernel mode never starts its conntrack source.
                var flowSink = _config.Netflow.Enabled.Value == false ? null : _flowSink;
                firewall = await EngineFirewall.AttachAsync(iface, _time, _loggerFactory.CreateLogger<EngineFirewall>(), _recorder, new FirewallOptions { LocalAddresses = [ifaceOptions.Address], RosenpassPort = _config.Rosenpass.Enabled.Value == true ? (ushort)_config.Rosenpass.Port : null }, _seams.Nftables, flowSink: flowSink, cancellationToken: cancellationToken);
            }
            else
            {
                _recorder.SetFirewall(FirewallStatus.Off);
                _logger.LogWarning("[firewall] enabled = false: no access policy is enforced on {Interface}; every peer reaches this host", iface.Name);
            }

            // Kernel mode's ICE socket talks to peers directly, like WireGuard's: an exit node must not carry it either.
            await _seams.BeforeAsync(EngineStep.Routes, cancellationToken);
            routes = new RouteManager(
                iface,
                _seams.RouteOs ?? new HostRouteOs(),
                _seams.Nftables ?? Firewall.Nftables.HostNftables.Instance,
                _loggerFactory.CreateLogger<RouteManager>(),
                RouteManagerOptions.For(iface) with { FilterForwarded = _config.Firewall.Enabled, MarkFlows = firewall?.ReportsKernelFlows == true, FlowRules = firewall?.KernelFlowRules },
                created.OwnedTransport is IceSocketTransport checks ? checks.SetMark : null,
                firewall?.Conntrack);

            await _seams.BeforeAsync(EngineStep.Dns, cancellationToken);
            if (_config.Dns.Enabled)
            {
                var resolver = new MeshDnsService(_config.Dns.ListenPort, _loggerFactory, _time);
                var guarded = firewall;
                resolver.ListeningChanged += listening => OnDnsListening(resolver, guarded, listening);
                dns = resolver;
            }

            await _seams.BeforeAsync(EngineStep.Up, cancellationToken);
            await iface.CreateAsync(cancellationToken);
            await iface.UpAsync(cancellationToken);

            await _seams.BeforeAsync(EngineStep.Connections, cancellationToken);
            var agent = new IceAgent(created.Transport, _time, _loggerFactory.CreateLogger<IceAgent>());
            var paths = new EnginePaths(agent, created.PortOffset);
            paths.LocalCandidates = CandidateGatherer.HostCandidates(agent.LocalPort, iface.Name, iface.Address);
            _logger.LogInformation("Interface {Interface} up ({Mode}); host candidates: {Candidates}", iface.Name, iface.Mode,
                string.Join(", ", paths.LocalCandidates));

            proxies = new ProxySelector(
                _config.Proxy.Kind,
                _options.ProxyFactories,
                new ProxyEnvironment(_config.Proxy.EbpfDisabled, Environment.UserName == "root"),
                PluginContext);
            try
            {
                // An explicit ebpf is loaded and attached now, not at the first relayed connect: failing stops start-up.
                await proxies.StartAsync(iface, cancellationToken);
            }
            catch (InvalidOperationException e)
            {
                var at = _config.Positions.TryGetValue("proxy.kind", out var p) ? p : default;
                throw new EngineFatalException(new ConfigException(_config.SourcePath, at.Line, at.Column, "proxy.kind", e.Message).Message, e);
            }

            var relay = new EngineRelayConnector(iface, _identity.PublicKey, proxies, _recorder, _logger);
            relay.Apply(services);
            var manager = new ConnectionManager(iface, _signaling, paths, relay, _options.PeerOptions, _recorder, _time, _loggerFactory, listener => ActivityMonitors.Create(iface, listener, _loggerFactory, _time));
            var guardedByFirewall = firewall;
            var exchange = LocalService.Udp(ifaceOptions.Address, (ushort)_config.Rosenpass.Port);
            var presharedKeys = new PresharedKeys(_config, _options.PskProviderFactories, name => PskProviderContext(name, ifaceOptions.Address), _identity.PublicKey, _recorder, _logger)
            {
                ProviderRunning = (running, token) => guardedByFirewall?.SetExchangeServiceAsync(running ? exchange : null, token) ?? Task.CompletedTask,
            };
            return new EngineParts(iface, created.OwnedTransport, firewall, routes, dns, paths, relay, manager, presharedKeys);
        }
        catch
        {
            await CloseAsync(created?.Iface, created?.OwnedTransport, firewall, routes, dns, manager: null);
            if (proxies is not null)
            {
                await proxies.DisposeAsync();
            }

            throw;
        }
    }

    /// <summary>Closes every part (the engine does this when it stops).</summary>
    public async Task CloseAsync(EngineParts parts)
    {
        await CloseAsync(parts.Iface, parts.IceTransport, parts.Firewall, parts.Routes, parts.Dns, parts.Manager, parts.PresharedKeys);
        await parts.Relay.Proxies.DisposeAsync(); // after the peers' proxies: the held eBPF program goes last
    }

    /// <summary>What a plugin factory receives: its <c>[plugins.NAME]</c> settings and the engine's services.</summary>
    private EnginePluginContext PluginContext(string name)
        => new(_config.SettingsFor(name), _loggerFactory, _time, _config.StateDir, _options.Services) { FlowUploader = _flowUploader };

    /// <summary>
    /// The PSK provider's context: its <c>[plugins.NAME]</c> section, plus what the host knows for it, unless the section
    /// sets them: <c>address</c> (this agent's overlay address) and <c>port</c> (<c>[rosenpass] port</c>), where its
    /// exchange listens inside the tunnel.
    /// </summary>
    private EnginePluginContext PskProviderContext(string name, IPAddress overlayIp)
    {
        // The agent's own overlay IP, not the interface's network (IWgIface.Address is 100.64.0.0/10, which no socket binds).
        var settings = new Dictionary<string, object?>(_config.SettingsFor(name), StringComparer.Ordinal);
        settings.TryAdd("address", overlayIp.ToString());
        settings.TryAdd("port", (long)_config.Rosenpass.Port);
        return new EnginePluginContext(settings, _loggerFactory, _time, _config.StateDir, _options.Services) { RosenpassKeys = RosenpassKeys };
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

    /// <summary>While the resolver listens, every peer may reach it whatever the policies; nothing else is opened.</summary>
    private void OnDnsListening(MeshDnsService dns, EngineFirewall? firewall, IPEndPoint? listening)
    {
        firewall?.SetLocalServices(listening is null
            ? []
            : [LocalService.Udp(listening.Address, (ushort)listening.Port), LocalService.Tcp(listening.Address, (ushort)listening.Port)]);
        _recorder.SetDns(dns.Status());
    }

    /// <summary>Closes the parts that exist, in an order that leaves nothing behind: routes before the interface, the firewall after it.</summary>
    private async Task CloseAsync(IWgIface? iface, IDisposable? iceTransport, EngineFirewall? firewall, RouteManager? routes, MeshDnsService? dns, ConnectionManager? manager, PresharedKeys? presharedKeys = null)
    {
        if (presharedKeys is not null)
        {
            // First: the provider's exchange runs inside the tunnel and asks nothing of the parts below.
            await presharedKeys.DisposeAsync();
        }

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
}
