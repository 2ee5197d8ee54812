using System.Runtime.InteropServices;

namespace Modular.Core.Lazy;

/// <summary>
/// struct msghdr and the libc calls that take it (recvmsg(2), sendmsg(2)), written once for the loopback readers
/// and senders that need IP_PKTINFO: <see cref="LoopbackReceiver"/> and the udp proxy's per-peer sender. Linux
/// x86_64/aarch64 ABI. Compiled into Modular.Core and, linked, into the proxy-udp plugin.
/// </summary>
internal static class NativeMessages
{
    [StructLayout(LayoutKind.Sequential)]
    public struct MsgHdr
    {
        public nint Name;
        public uint NameLength;
        public nint Iov;
        public nuint IovLength;
        public nint Control;
        public nuint ControlLength;
        public int Flags;
    }

    [DllImport("libc", EntryPoint = "recvmsg", SetLastError = true)]
    [DefaultDllImportSearchPaths(DllImportSearchPath.SafeDirectories)]
    public static extern nint RecvMsg(int fd, ref MsgHdr message, int flags);

    [DllImport("libc", EntryPoint = "sendmsg", SetLastError = true)]
    [DefaultDllImportSearchPaths(DllImportSearchPath.SafeDirectories)]
    public static extern nint SendMsg(int fd, ref MsgHdr message, int flags);
}
