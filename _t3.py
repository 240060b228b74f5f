import time, torch
from gans.stylegan2 import StyleGAN2
from gans.dcgan import DCGAN
torch.set_num_threads(1)
for mk in [lambda: DCGAN("c",32,1,0,num_classes=3,conditional=True,loss="hinge",d_spectral_norm=True,d_norm="none"),
           lambda: StyleGAN2("s",32,1,3,latent_dim=128,w_dim=128,mapping_layers=2,channel_base=2048,channel_max=128)]:
    torch.manual_seed(0); gan=mk(); opts=gan.configure_optimizers(2e-4,2e-4,(0.5,0.999))
    batch={"images": torch.rand(8,1,32,32)*2-1, "masks": torch.randint(0,3,(8,32,32)), "labels": torch.randint(0,3,(8,))}
    for s in range(6):
        t=time.time(); l=gan.train_step(batch, opts, s); print(s, time.time()-t)
