using System.Net;
using Microsoft.Extensions.Logging;
using Modular.Abstractions.WireGuard;
using Modular.WireGuard.Conn;
using Modular.WireGuard.Device;
using Modular.WireGuard.Tun;
using Modular.WireGuard.Uapi;

namespace Modular.WireGuard.Interface;

/// <summary>
/// WireGuard inside this process: a Linux TUN (with offloads) and the batched UDP bind driven
/// by <see cref="WgDevice"/>. It exposes the device's Bind hook, so the bind proxy and lazy
/// connections hand packets to WireGuard without a socket.
/// </summary>
public sealed class UserspaceWgIface : IWgIface
{
    private readonly WgIfaceOptions _options;
    private readonly ILoggerFactory _loggerFactory;
    private readonly ILogger _logger;
    private readonly TimeProvider _time;
    private readonly Func<IBind> _bindFactory;
    private readonly SemaphoreSlim _gate = new(1, 1);
    private WgDevice? _device;
    private LinuxTun? _tun;
    private IPacketFilter? _packetFilter;
    private UapiServer? _uapi;
    private bool _closed;

    /// <param name="bindFactory">The UDP bind to use; <see cref="UdpBind"/> by default (the agent's ICE layer may wrap it).</param>
    public UserspaceWgIface(WgIfaceOptions options, ILoggerFactory loggerFactory, TimeProvider time, Func<IBind>? bindFactory = null)
    {
        Tun.LinuxTun.ValidateInterfaceName(options.Name);
        _options = options;
        _loggerFactory = loggerFactory;
        _logger = loggerFactory.CreateLogger<UserspaceWgIface>();
        _time = time;
        _bindFactory = bindFactory ?? (() => new UdpBind());
        PublicKey = WgKeys.PublicKeyOf(options.PrivateKey);
    }

    public string Name => _options.Name;

    public WgInterfaceMode Mode => WgInterfaceMode.Userspace;

    public IPNetwork Address => _options.Network;

    public IPAddress OverlayIp => _options.Address;

    public int Mtu => _options.Mtu;

    /// <summary>The bound port once up (when 0 was asked, the one the OS chose).</summary>
    public int ListenPort => _device is { IsUp: true } device ? device.ListenPort : _options.ListenPort;

    public WgKey PublicKey { get; }

    public IWgBindHook? BindHook => _device?.BindHook;

    /// <summary>The device, for in-process users (UAPI server, tests); null before Create.</summary>
    public WgDevice? Device => _device;

    /// <summary>
    /// When set, Create serves the device's UAPI socket read-only (<see cref="ReadOnlyUapiHandler"/>) at
    /// &lt;directory&gt;/&lt;name&gt;.sock, so `wg show` works; Close removes it. A path another process
    /// serves is a warning, not a failure (<see cref="UapiServer.TryStart"/>). Null: no socket.
    /// </summary>
    public string? ReadOnlyUapiDirectory { get; init; }

    /// <summary>The UAPI socket this interface serves, or null (not asked for, not created, or the path was taken).</summary>
    public string? UapiSocketPath => _uapi?.SocketPath;

    /// <summary>
    /// Filters every packet crossing the device (the agent's stateful firewall); null: everything passes.
    /// Settable before Create (kept for the device it creates) or while running.
    /// </summary>
    public IPacketFilter? PacketFilter
    {
        get => Volatile.Read(ref _packetFilter);
        set
        {
            Volatile.Write(ref _packetFilter, value);
            if (_device is { } device)
            {
                device.PacketFilter = value;
            }
        }
    }

    public async ValueTask CreateAsync(CancellationToken cancellationToken)
    {
        await _gate.WaitAsync(cancellationToken);
        try
        {
            ObjectDisposedException.ThrowIf(_closed, this);
            if (_device is not null)
            {
                throw new InvalidOperationException($"{Name} is already created.");
            }

            _tun = LinuxTun.Create(Name, _options.Mtu);
            _device = new WgDevice(_tun, _bindFactory(), _loggerFactory, _time) { PacketFilter = PacketFilter };
            _device.SetPrivateKey(_options.PrivateKey);
            _device.SetListenPort((ushort)_options.ListenPort);
            await IpCommand.RunAsync($"address add {_options.AddressWithPrefix} dev {Name}", cancellationToken);
            if (ReadOnlyUapiDirectory is { } directory)
            {
                var handler = new ReadOnlyUapiHandler(UapiServer.HandlerFor(_device), Name, _logger);
                _uapi = UapiServer.TryStart(UapiServer.PathFor(Name, directory), handler, Name, _logger);
            }

            _logger.LogInformation("Created userspace {Interface} {Address} mtu {Mtu} (TUN offloads {Offloads})",
                Name, _options.AddressWithPrefix, _options.Mtu, _tun.OffloadsEnabled ? "on" : "off");
        }
        catch
        {
            await CloseLockedAsync();
            throw;
        }
        finally
        {
            _gate.Release();
        }
    }

    public async ValueTask UpAsync(CancellationToken cancellationToken)
    {
        var device = RequireCreated();
        device.Up();
        await IpCommand.RunAsync($"link set dev {Name} up", cancellationToken);
    }

    public async ValueTask CloseAsync(CancellationToken cancellationToken)
    {
        await _gate.WaitAsync(cancellationToken);
        try
        {
            _closed = true;
            await CloseLockedAsync();
        }
        finally
        {
            _gate.Release();
        }
    }

    private async ValueTask CloseLockedAsync()
    {
        // The socket goes first, so no `wg show` reads a device being torn down.
        var uapi = _uapi;
        _uapi = null;
        if (uapi is not null)
        {
            await uapi.DisposeAsync();
        }

        // Disposing the device closes the bind and the TUN fd; the kernel then removes the interface.
        var device = _device;
        _device = null;
        device?.Dispose();
        if (device is null)
        {
            _tun?.Dispose();
        }

        _tun = null;
    }

    public ValueTask SetPeerAsync(WgPeerConfig peer, CancellationToken cancellationToken)
    {
        RequireCreated().SetPeer(peer);
        return ValueTask.CompletedTask;
    }

    public ValueTask SetFwmarkAsync(uint mark, CancellationToken cancellationToken)
    {
        RequireCreated().SetFwmark(mark);
        return ValueTask.CompletedTask;
    }

    public ValueTask RemovePeerAsync(WgKey publicKey, CancellationToken cancellationToken)
    {
        RequireCreated().RemovePeer(publicKey);
        return ValueTask.CompletedTask;
    }

    public ValueTask UpdateEndpointAsync(WgKey publicKey, IPEndPoint endpoint, CancellationToken cancellationToken)
    {
        var device = RequireCreated();
        var result = device.IpcSet(new StringReader(WgUapiText.UpdateEndpoint(publicKey, endpoint)));
        return result == 0 ? ValueTask.CompletedTask : ValueTask.FromException(new IOException($"endpoint update failed: errno {result}"));
    }

    public ValueTask<IReadOnlyDictionary<WgKey, WgPeerStats>> GetStatsAsync(CancellationToken cancellationToken)
        => ValueTask.FromResult(RequireCreated().GetPeerStats());

    private WgDevice RequireCreated()
    {
        ObjectDisposedException.ThrowIf(_closed, this);
        return _device ?? throw new InvalidOperationException($"{Name} is not created yet.");
    }

    public async ValueTask DisposeAsync()
    {
        await CloseAsync(CancellationToken.None);
        _gate.Dispose();
    }
}
