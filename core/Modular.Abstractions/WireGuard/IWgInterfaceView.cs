namespace Modular.Abstractions.WireGuard;

/// <summary>
/// What a proxy plugin may know about the WireGuard interface it serves: its name, how it is
/// realised, the port WireGuard listens on and, for the in-process WireGuard, the Bind hook.
/// Nothing here changes the interface; peers, addresses and the interface's lifetime stay the
/// host's.
/// </summary>
/// <remarks>
/// Thread-safe: every member may be read from any thread, at any time while the proxy that
/// received the view is open. The values do not change while the interface is up.
/// The host may hand over an object that implements more than this view; a plugin must not
/// cast it to anything else (that object changes without notice).
/// </remarks>
public interface IWgInterfaceView
{
    /// <summary>The OS name of the interface, e.g. <c>wt0</c>; for messages and logs.</summary>
    string Name { get; }

    /// <summary>How the interface is realised (in-process or an external device).</summary>
    WgInterfaceMode Mode { get; }

    /// <summary>True when WireGuard runs in this process and <see cref="BindHook"/> is available.</summary>
    bool IsUserspace => Mode == WgInterfaceMode.Userspace;

    /// <summary>The UDP port WireGuard listens on (on every local address, loopback included); default 51820.</summary>
    int ListenPort { get; }

    /// <summary>For a userspace interface: the Bind-level hook the bind proxy uses; null otherwise.</summary>
    IWgBindHook? BindHook { get; }
}
