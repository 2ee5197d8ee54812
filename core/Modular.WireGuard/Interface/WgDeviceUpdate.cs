using System.Net;
using Modular.Abstractions.WireGuard;

namespace Modular.WireGuard.Interface;

/// <summary>
/// One configuration change for an external device, independent of how it is delivered
/// (UAPI text to wireguard-go, or a WG_CMD_SET_DEVICE netlink message to the kernel).
/// Holds keys: never log it.
/// </summary>
internal sealed record WgDeviceUpdate
{
    public WgKey? PrivateKey { get; init; }

    public int? ListenPort { get; init; }

    /// <summary>SO_MARK for the device's UDP socket; 0 clears it.</summary>
    public uint? Fwmark { get; init; }

    /// <summary>Add or replace this peer (allowed IPs replaced).</summary>
    public WgPeerConfig? Peer { get; init; }

    public WgKey? RemovedPeer { get; init; }

    /// <summary>Only the endpoint of an existing peer changes.</summary>
    public (WgKey PublicKey, IPEndPoint Endpoint)? Endpoint { get; init; }

    public static WgDeviceUpdate Device(WgKey privateKey, int listenPort) => new() { PrivateKey = privateKey, ListenPort = listenPort };

    public static WgDeviceUpdate ForFwmark(uint mark) => new() { Fwmark = mark };

    public static WgDeviceUpdate ForPeer(WgPeerConfig peer) => new() { Peer = peer };

    public static WgDeviceUpdate Remove(WgKey publicKey) => new() { RemovedPeer = publicKey };

    public static WgDeviceUpdate ForEndpoint(WgKey publicKey, IPEndPoint endpoint) => new() { Endpoint = (publicKey, endpoint) };

    public string ToUapiText()
    {
        var text = string.Empty;
        if (PrivateKey is { } key)
        {
            text += WgUapiText.SetDevice(key, ListenPort ?? 0);
        }

        // Device-level keys come before the first peer line.
        if (Fwmark is { } mark)
        {
            text += WgUapiText.SetFwmark(mark);
        }

        if (Peer is { } peer)
        {
            text += WgUapiText.SetPeer(peer);
        }

        if (RemovedPeer is { } removed)
        {
            text += WgUapiText.RemovePeer(removed);
        }

        if (Endpoint is { } endpoint)
        {
            text += WgUapiText.UpdateEndpoint(endpoint.PublicKey, endpoint.Endpoint);
        }

        return text;
    }

    public override string ToString() => "WgDeviceUpdate (contents hidden)";
}
