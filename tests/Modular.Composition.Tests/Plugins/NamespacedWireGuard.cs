using System.Net;
using System.Net.Sockets;
using Modular.Abstractions.Plugins;
using Modular.Abstractions.Proxy;
using Modular.Abstractions.WireGuard;
using Modular.Testing;

namespace Modular.Composition.Tests.Plugins;

/// <summary>
/// A network namespace of its own with a plain UDP socket in it standing in for kernel WireGuard (bound to 0.0.0.0 on
/// a free port), for proxies whose sockets or programs must live next to that WireGuard: the eBPF proxy attaches its
/// program to the namespace's lo, never the host's. Proxies are created (and anything else run) inside the namespace
/// through <see cref="InNamespace"/>. Disposing closes the stand-in and deletes the namespace with anything still
/// running in it, also when the test failed. Used by <see cref="EbpfProxyNamespaceTests"/> and
/// <see cref="ProxyScaleBenchmark"/>.
/// </summary>
internal sealed class NamespacedWireGuard : IDisposable
{
    private NamespacedWireGuard(NetworkNamespace ns, Socket wireGuard)
    {
        Namespace = ns;
        WireGuard = wireGuard;
        Interface = new FakeWgInterfaceView(WgInterfaceMode.Kernel, ((IPEndPoint)wireGuard.LocalEndPoint!).Port);
    }

    public NetworkNamespace Namespace { get; }

    /// <summary>The socket standing in for WireGuard; read it to see what a proxy delivered.</summary>
    public Socket WireGuard { get; }

    /// <summary>The kernel-mode interface a proxy factory is given: WireGuard's listen port is the stand-in's.</summary>
    public IWgInterfaceView Interface { get; }

    /// <summary>Creates "mdl-&lt;prefix&gt;-…" with lo up and the stand-in bound in it (optionally with a larger receive buffer).</summary>
    public static NamespacedWireGuard Create(string prefix, int receiveBufferBytes = 0)
    {
        var ns = NetworkNamespace.Create(prefix);
        try
        {
            var wireGuard = InNamespace.Create(ns.Name, () => UdpSocket(new IPEndPoint(IPAddress.Any, 0), receiveBufferBytes));
            return new NamespacedWireGuard(ns, wireGuard);
        }
        catch
        {
            ns.Dispose();
            throw;
        }
    }

    /// <summary>Runs <paramref name="action"/> on a thread inside the namespace (sockets it opens stay there).</summary>
    public T Run<T>(Func<T> action) => InNamespace.Create(Namespace.Name, action);

    /// <summary>Creates one proxy from <paramref name="factory"/> inside the namespace, for <see cref="Interface"/>.</summary>
    public IProxy CreateProxy(IProxyFactory factory, IPluginContext? context = null)
        => Run(() => factory.CreateAsync(Interface, context ?? new FakePluginContext(), CancellationToken.None).AsTask().GetAwaiter().GetResult());

    /// <summary>Another UDP socket in the namespace, bound to <paramref name="bindTo"/> (bystanders, other programs).</summary>
    public Socket Socket(IPEndPoint bindTo) => Run(() => UdpSocket(bindTo, 0));

    /// <summary>The UDP sockets open in the namespace (the test's own: nothing else runs there).</summary>
    public int UdpSockets() => Namespace.Exec("ss -uaH").Split('\n', StringSplitOptions.RemoveEmptyEntries).Length;

    public void Dispose()
    {
        WireGuard.Dispose();
        Namespace.Dispose();
    }

    private static Socket UdpSocket(IPEndPoint bindTo, int receiveBufferBytes)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        try
        {
            if (receiveBufferBytes > 0)
            {
                socket.ReceiveBufferSize = receiveBufferBytes;
            }

            socket.Bind(bindTo);
            return socket;
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }
}
