namespace Modular.WireGuard.Conn;

/// <summary>
/// A bind whose sockets can carry a firewall mark (Linux SO_MARK), so policy routing can keep
/// WireGuard's own UDP traffic out of the tunnel. The device calls <see cref="SetMark"/> when
/// the UAPI `fwmark` changes; the bind applies it to the open socket and to every later one.
/// </summary>
public interface IBindWithMark : IBind
{
    /// <summary>Sets the mark (0 clears it). Throws <see cref="IOException"/> when the kernel refuses it (it needs CAP_NET_ADMIN).</summary>
    void SetMark(uint mark);
}
