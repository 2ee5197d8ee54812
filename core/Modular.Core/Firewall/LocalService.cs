using System.Net;

namespace Modular.Core.Firewall;

/// <summary>
/// A service on this peer that policies do not govern: inbound <see cref="Protocol"/> (an
/// <see cref="IpProtocol"/> number) to <see cref="Address"/> (this peer's own overlay address) and
/// <see cref="Port"/> is always accepted. See <see cref="StatefulFirewall.LocalServices"/>.
/// </summary>
public readonly record struct LocalService(byte Protocol, UInt128 Address, ushort Port)
{
    public static LocalService Udp(IPAddress address, ushort port) => new(IpProtocol.Udp, IpPrefix128.ToUInt128(address), port);

    public static LocalService Tcp(IPAddress address, ushort port) => new(IpProtocol.Tcp, IpPrefix128.ToUInt128(address), port);
}
