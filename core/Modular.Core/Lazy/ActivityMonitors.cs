using Microsoft.Extensions.Logging;
using Modular.Abstractions.Activity;
using Modular.Abstractions.WireGuard;

namespace Modular.Core.Lazy;

/// <summary>Picks the activity monitor an interface supports, so the engine need not know the kinds.</summary>
internal static class ActivityMonitors
{
    /// <summary>The stand-in endpoint of idle peers: a claim on the in-process Bind, or one loopback socket for kernel/external WireGuard.</summary>
    public static IActivityMonitor Create(IWgIface iface, IActivityListener listener, ILoggerFactory loggerFactory, TimeProvider time)
    {
        var logger = loggerFactory.CreateLogger("Modular.Core.Lazy.ActivityMonitor");
        return iface.BindHook is { } hook
            ? new BindHookActivityMonitor(hook, listener, logger)
            : new LoopbackActivityMonitor(listener, logger, time);
    }
}
