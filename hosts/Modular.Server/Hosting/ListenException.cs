using System.Net.Sockets;

namespace Modular.Server.Hosting;

/// <summary>
/// A component could not open its listener: "relay: cannot listen on 127.0.0.1:33080: address already in use".
/// The message is the whole story (an operator fixes the address or stops the other process), so it is
/// reported in one line, without a stack trace.
/// </summary>
public sealed class ListenException : IOException
{
    public ListenException(string component, string address, Exception innerException)
        : base($"{component}: cannot listen on {address}: {Reason(innerException)}", innerException)
    {
        Component = component;
        Address = address;
    }

    public ListenException()
    {
        Component = "";
        Address = "";
    }

    public ListenException(string message)
        : base(message)
    {
        Component = "";
        Address = "";
    }

    public ListenException(string message, Exception innerException)
        : base(message, innerException)
    {
        Component = "";
        Address = "";
    }

    /// <summary>management, signal, relay or stun (several when they share the gRPC listener).</summary>
    public string Component { get; }

    public string Address { get; }

    /// <summary>
    /// The listener failure inside <paramref name="e"/> (ours, or Kestrel's "Failed to bind to address" around a
    /// socket error) as a <see cref="ListenException"/> of <paramref name="component"/>; null when it is something else.
    /// </summary>
    public static ListenException? Find(Exception e, string component, string address)
    {
        for (Exception? inner = e; inner is not null; inner = inner.InnerException)
        {
            if (inner is ListenException listen)
            {
                return listen;
            }
        }

        for (Exception? inner = e; inner is not null; inner = inner.InnerException)
        {
            if (inner is SocketException socket)
            {
                return new ListenException(component, address, socket);
            }
        }

        return null;
    }

    private static string Reason(Exception e) => e is SocketException s
        ? s.SocketErrorCode switch
        {
            SocketError.AddressAlreadyInUse => "address already in use",
            SocketError.AccessDenied => "permission denied (a port below 1024 needs root or CAP_NET_BIND_SERVICE)",
            SocketError.AddressNotAvailable => "no such address on this host",
            _ => s.Message,
        }
        : e.Message;
}
