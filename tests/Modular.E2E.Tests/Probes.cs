using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Modular.E2E.Tests;

/// <summary>Bounded TCP and UDP probes between test namespaces: what a policy or route lets through, and what it drops.</summary>
internal static class Probes
{
    /// <summary>How long a probe waits before calling a packet dropped.</summary>
    public static readonly TimeSpan DropProbe = TimeSpan.FromSeconds(3);

    /// <summary>A TCP listener in a namespace answering each connection with "port N".</summary>
    public static Socket Listen(string namespaceName, IPAddress address, int port, CancellationToken cancellationToken)
        => Listen(namespaceName, address, port, _ => $"port {port}", cancellationToken);

    /// <summary>A TCP listener in a namespace answering each connection with "from &lt;the address it sees&gt;" (shows masquerading).</summary>
    public static Socket ListenAndTellSource(string namespaceName, IPAddress address, int port, CancellationToken cancellationToken)
        => Listen(namespaceName, address, port, source => $"from {source}", cancellationToken);

    /// <summary>A TCP listener in a namespace answering each connection with <paramref name="answer"/> of the client's address.</summary>
    public static Socket Listen(string namespaceName, IPAddress address, int port, Func<IPAddress, string> answer, CancellationToken cancellationToken)
    {
        var listener = NamespaceSocket.Create(namespaceName, AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
        listener.Bind(new IPEndPoint(address, port));
        listener.Listen(8);
        _ = Task.Run(async () =>
        {
            try
            {
                while (!cancellationToken.IsCancellationRequested)
                {
                    using var client = await listener.AcceptAsync(cancellationToken);
                    var source = ((IPEndPoint)client.RemoteEndPoint!).Address;
                    await client.SendAsync(Encoding.ASCII.GetBytes(answer(source)), SocketFlags.None, cancellationToken);
                    client.Shutdown(SocketShutdown.Both);
                }
            }
            catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException)
            {
                // The test is over: the listener was closed.
            }
        }, CancellationToken.None);
        return listener;
    }

    /// <summary>Connects from a namespace (bounded by <paramref name="within"/>, default <see cref="DropProbe"/>) and reads the listener's answer.</summary>
    public static bool TryTcp(string namespaceName, IPAddress address, int port, out string reply, TimeSpan? within = null)
    {
        reply = "";
        using var socket = NamespaceSocket.Create(namespaceName, AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        using var timeout = new CancellationTokenSource(within ?? DropProbe);
        try
        {
            socket.ConnectAsync(new IPEndPoint(address, port), timeout.Token).AsTask().GetAwaiter().GetResult();
            var buffer = new byte[64];
            var total = 0;
            while (total < buffer.Length)
            {
                var read = socket.ReceiveAsync(buffer.AsMemory(total), SocketFlags.None, timeout.Token).AsTask().GetAwaiter().GetResult();
                if (read == 0)
                {
                    break;
                }

                total += read;
            }

            reply = Encoding.ASCII.GetString(buffer, 0, total);
            return true;
        }
        catch (Exception e) when (e is OperationCanceledException or SocketException)
        {
            return false;
        }
    }

    /// <summary>Sends a few datagrams from a namespace; true when one reaches <paramref name="receiver"/> within <see cref="DropProbe"/>.</summary>
    public static bool UdpArrives(string namespaceName, Socket receiver, IPAddress address)
    {
        using var sender = NamespaceSocket.Create(namespaceName, AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        var payload = Encoding.ASCII.GetBytes("udp probe");
        for (var i = 0; i < 3; i++)
        {
            sender.SendTo(payload, new IPEndPoint(address, 5353));
        }

        var buffer = new byte[64];
        using var timeout = new CancellationTokenSource(DropProbe);
        try
        {
            var read = receiver.ReceiveAsync(buffer, SocketFlags.None, timeout.Token).AsTask().GetAwaiter().GetResult();
            // Drain the rest of this probe so the next one starts from an empty queue.
            while (receiver.Available > 0)
            {
                receiver.Receive(buffer);
            }

            return read > 0;
        }
        catch (OperationCanceledException)
        {
            return false;
        }
    }
}
