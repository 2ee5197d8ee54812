using Microsoft.Extensions.Hosting.Systemd;

namespace Modular.Agent.Daemon;

/// <summary>
/// Tells systemd how the daemon is doing (sd_notify, for the Type=notify unit scripts/publish installs): READY=1 once
/// the CLI socket listens and the interface is up or the engine is retrying, STOPPING=1 once when it begins to stop.
/// Does nothing without NOTIFY_SOCKET (not started by systemd).
/// </summary>
internal sealed class ServiceNotifier
{
    private readonly SystemdNotifier _systemd = new();
    private int _stopping;

    public void Ready()
    {
        if (_systemd.IsEnabled && Volatile.Read(ref _stopping) == 0)
        {
            _systemd.Notify(ServiceState.Ready);
        }
    }

    /// <summary>Safe to call from several stop paths (a signal, `modular down`, the engine failing): says it once.</summary>
    public void Stopping()
    {
        if (_systemd.IsEnabled && Interlocked.Exchange(ref _stopping, 1) == 0)
        {
            _systemd.Notify(ServiceState.Stopping);
        }
    }
}
