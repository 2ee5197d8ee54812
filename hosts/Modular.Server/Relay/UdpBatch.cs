using System.Runtime.InteropServices;

namespace Modular.Server.Relay;

/// <summary>
/// recvmmsg/sendmmsg (Linux, x86_64/arm64 LP64 layouts): many datagrams per system call, which is where
/// a UDP relay spends its time. Buffers are pinned arrays owned by the caller.
/// </summary>
internal static unsafe partial class UdpBatch
{
    public const int MsgTrunc = 0x20;
    public const int MsgWaitForOne = 0x10000;
    public const int SockaddrStorageSize = 128;
    public const int EAgain = 11;
    public const int EIntr = 4;

    [StructLayout(LayoutKind.Sequential)]
    public struct IoVec
    {
        public byte* Base;
        public nuint Length;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct MsgHdr
    {
        public byte* Name;
        public uint NameLength;
        public IoVec* Iov;
        public nuint IovLength;
        public void* Control;
        public nuint ControlLength;
        public int Flags;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct MMsgHdr
    {
        public MsgHdr Header;
        public uint Length;
    }

    [LibraryImport("libc", EntryPoint = "recvmmsg", SetLastError = true)]
    public static partial int RecvMMsg(nint fd, MMsgHdr* messages, uint count, int flags, void* timeout);

    [LibraryImport("libc", EntryPoint = "sendmmsg", SetLastError = true)]
    public static partial int SendMMsg(nint fd, MMsgHdr* messages, uint count, int flags);
}
