using System.Net;
using Microsoft.Extensions.Logging;
using Modular.Abstractions.WireGuard;
using Modular.WireGuard.Kernel;

namespace Modular.WireGuard.Interface;

/// <summary>
/// An external WireGuard device: the kernel module where the kernel has it (configured over
/// generic netlink), otherwise a wireguard-go process this object starts, owns and stops
/// (configured over its UAPI socket). Address, MTU and link state go through `ip`.
/// </summary>
public sealed class KernelWgIface : IWgIface
{
    private readonly WgIfaceOptions _options;
    private readonly ILogger _logger;
    private readonly string _userspaceExecutable;
    private readonly SemaphoreSlim _gate = new(1, 1);
    private IExternalWgControl? _control;
    private bool _closed;

    /// <param name="userspaceExecutable">What runs when there is no kernel module (wireguard-go by default).</param>
    /// <param name="useKernelModule">null: detect; false forces the userspace process.</param>
    public KernelWgIface(WgIfaceOptions options, ILoggerFactory loggerFactory, string userspaceExecutable = "wireguard-go", bool? useKernelModule = null)
    {
        Tun.LinuxTun.ValidateInterfaceName(options.Name);
        _options = options;
        _logger = loggerFactory.CreateLogger<KernelWgIface>();
        _userspaceExecutable = userspaceExecutable;
        UsesKernelModule = useKernelModule ?? KernelModuleAvailable();
        PublicKey = WgKeys.PublicKeyOf(options.PrivateKey);
    }

    public string Name => _options.Name;

    /// <summary>Runs the device in this named network namespace instead of ours (component tests).</summary>
    internal string? NetworkNamespace { get; init; }

    private string Ip => IpCommand.In(NetworkNamespace);

    public WgInterfaceMode Mode => WgInterfaceMode.Kernel;

    public IPNetwork Address => _options.Network;

    public IPAddress OverlayIp => _options.Address;

    public int Mtu => _options.Mtu;

    public int ListenPort => _options.ListenPort;

    public WgKey PublicKey { get; }

    public IWgBindHook? BindHook => null;

    /// <summary>True when the kernel module drives the interface; false when a wireguard-go process does.</summary>
    public bool UsesKernelModule { get; }

    /// <summary>The wireguard-go process id while one runs; null on the kernel path.</summary>
    public int? ProcessId => (_control as UapiControl)?.Process.ProcessId;

    /// <summary>True when this kernel has the WireGuard module loaded or built in.</summary>
    public static bool KernelModuleAvailable() => Directory.Exists("/sys/module/wireguard");

    public async ValueTask CreateAsync(CancellationToken cancellationToken)
    {
        await _gate.WaitAsync(cancellationToken);
        try
        {
            ObjectDisposedException.ThrowIf(_closed, this);
            if (_control is not null)
            {
                throw new InvalidOperationException($"{Name} is already created.");
            }

            if (UsesKernelModule)
            {
                await IpCommand.RunAsync($"{Ip}link add dev {Name} type wireguard", cancellationToken);
                _control = new NetlinkControl(Name, Ip);
            }
            else
            {
                var process = await WireGuardGoProcess.StartAsync(Name, _logger, cancellationToken, _userspaceExecutable, NetworkNamespace);
                _control = new UapiControl(process);
            }

            await _control.SetAsync(WgDeviceUpdate.Device(_options.PrivateKey, _options.ListenPort), cancellationToken);
            await IpCommand.RunAsync($"{Ip}address add {_options.AddressWithPrefix} dev {Name}", cancellationToken);
            await IpCommand.RunAsync($"{Ip}link set dev {Name} mtu {_options.Mtu}", cancellationToken);
            _logger.LogInformation("Created {Interface} ({Kind}) {Address} mtu {Mtu} port {Port}",
                Name, UsesKernelModule ? "kernel module" : _userspaceExecutable, _options.AddressWithPrefix, _options.Mtu, _options.ListenPort);
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
        RequireCreated();
        await IpCommand.RunAsync($"{Ip}link set dev {Name} up", cancellationToken);
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

    private async Task CloseLockedAsync()
    {
        var control = _control;
        _control = null;
        if (control is not null)
        {
            await control.DisposeAsync();
        }

        if (IpCommand.LinkExists(Name, NetworkNamespace))
        {
            IpCommand.TryRun($"{Ip}link del {Name}");
        }
    }

    public ValueTask SetPeerAsync(WgPeerConfig peer, CancellationToken cancellationToken)
        => new(RequireCreated().SetAsync(WgDeviceUpdate.ForPeer(peer), cancellationToken));

    public ValueTask SetFwmarkAsync(uint mark, CancellationToken cancellationToken)
        => new(RequireCreated().SetAsync(WgDeviceUpdate.ForFwmark(mark), cancellationToken));

    public ValueTask RemovePeerAsync(WgKey publicKey, CancellationToken cancellationToken)
        => new(RequireCreated().SetAsync(WgDeviceUpdate.Remove(publicKey), cancellationToken));

    public ValueTask UpdateEndpointAsync(WgKey publicKey, IPEndPoint endpoint, CancellationToken cancellationToken)
        => new(RequireCreated().SetAsync(WgDeviceUpdate.ForEndpoint(publicKey, endpoint), cancellationToken));

    public async ValueTask<IReadOnlyDictionary<WgKey, WgPeerStats>> GetStatsAsync(CancellationToken cancellationToken)
        => await RequireCreated().GetStatsAsync(cancellationToken);

    private IExternalWgControl RequireCreated()
    {
        ObjectDisposedException.ThrowIf(_closed, this);
        return _control ?? throw new InvalidOperationException($"{Name} is not created yet.");
    }

    public async ValueTask DisposeAsync()
    {
        await CloseAsync(CancellationToken.None);
        _gate.Dispose();
    }

    /// <summary>Configures the device through wireguard-go's UAPI socket.</summary>
    private sealed class UapiControl(WireGuardGoProcess process) : IExternalWgControl
    {
        public WireGuardGoProcess Process { get; } = process;

        public Task SetAsync(WgDeviceUpdate command, CancellationToken cancellationToken) => Process.Uapi.SetAsync(command.ToUapiText(), cancellationToken);

        public async Task<IReadOnlyDictionary<WgKey, WgPeerStats>> GetStatsAsync(CancellationToken cancellationToken)
            => WgUapiText.ParseStats(await Process.Uapi.GetAsync(cancellationToken));

        public ValueTask DisposeAsync() => Process.DisposeAsync();
    }

    /// <summary>Configures the kernel module through generic netlink.</summary>
    private sealed class NetlinkControl(string name, string ipPrefix) : IExternalWgControl
    {
        public Task SetAsync(WgDeviceUpdate command, CancellationToken cancellationToken)
            => Task.Run(() => WgNetlink.SetDevice(name, command), cancellationToken);

        public Task<IReadOnlyDictionary<WgKey, WgPeerStats>> GetStatsAsync(CancellationToken cancellationToken)
            => Task.Run(() => WgNetlink.GetPeerStats(name), cancellationToken);

        public ValueTask DisposeAsync()
        {
            IpCommand.TryRun($"{ipPrefix}link del {name}");
            return ValueTask.CompletedTask;
        }
    }
}

/// <summary>How an external device is configured: UAPI text or netlink, same operations.</summary>
internal interface IExternalWgControl : IAsyncDisposable
{
    Task SetAsync(WgDeviceUpdate command, CancellationToken cancellationToken);

    Task<IReadOnlyDictionary<WgKey, WgPeerStats>> GetStatsAsync(CancellationToken cancellationToken);
}
