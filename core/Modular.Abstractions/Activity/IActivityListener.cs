using Modular.Abstractions.WireGuard;

namespace Modular.Abstractions.Activity;

/// <summary>
/// Told that an idle (lazy) peer has traffic. The lazy connection manager implements it;
/// activity monitors (a Bind hook in userspace mode, a listener socket standing in as the
/// peer's endpoint in kernel mode) call it. The first packet is handed over so it is not lost.
/// </summary>
public interface IActivityListener
{
    /// <summary>Must return quickly; <paramref name="firstPacket"/> is only valid during the call.</summary>
    void OnPeerActivity(WgKey peer, ReadOnlySpan<byte> firstPacket);
}
