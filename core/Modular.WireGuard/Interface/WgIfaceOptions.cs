using System.Net;
using Modular.Abstractions.WireGuard;

namespace Modular.WireGuard.Interface;

/// <summary>What every WireGuard interface is created with.</summary>
/// <param name="Name">OS interface name (at most 15 characters).</param>
/// <param name="PrivateKey">Our static private key; never logged.</param>
/// <param name="Address">Our overlay address, e.g. 100.64.0.7.</param>
/// <param name="PrefixLength">The overlay prefix length, e.g. 10 (the route the interface gets).</param>
/// <param name="Mtu">Interface MTU; 1280 by default.</param>
/// <param name="ListenPort">UDP port; 51820 by default, 0 lets the OS choose.</param>
public sealed record WgIfaceOptions(string Name, WgKey PrivateKey, IPAddress Address, int PrefixLength, int Mtu = 1280, int ListenPort = 51820)
{
    /// <summary>"address/prefix" as `ip address add` takes it (an IPNetwork would drop the host part).</summary>
    public string AddressWithPrefix => $"{Address}/{PrefixLength}";

    /// <summary>The overlay network (host bits cleared), for <see cref="IWgIface.Address"/>.</summary>
    public IPNetwork Network => IPNetwork.Parse(AddressWithPrefix);

    public override string ToString() => $"{Name} {AddressWithPrefix} mtu {Mtu} port {ListenPort} key {PrivateKey.ToRedactedString()}";
}
