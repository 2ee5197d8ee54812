using System.Net;
using Modular.Abstractions.WireGuard;

namespace Modular.WireGuard.Interface;

/// <summary>What every WireGuard interface is created with.</summary>
/// <param name="Name">OS interface name (at most 15 characters).</param>
/// <param name="PrivateKey">Our static private key; never logged.</param>
/// <param name="Address">Overlay address and prefix, e.g. 100.64.0.7/10.</param>
/// <param name="Mtu">Interface MTU; 1280 by default.</param>
/// <param name="ListenPort">UDP port; 51820 by default, 0 lets the OS choose.</param>
public sealed record WgIfaceOptions(string Name, WgKey PrivateKey, IPNetwork Address, int Mtu = 1280, int ListenPort = 51820)
{
    public override string ToString() => $"{Name} {Address} mtu {Mtu} port {ListenPort} key {PrivateKey.ToRedactedString()}";
}
